"""Names of the files in an experiment's directory that the runner writes and reports read."""

# OUT/plan.json: the cells of the grid and the learning-rate choices (cft_rl.report.compare).
PLAN = "plan.json"
# OUT/<cell>/cell.json: written when the cell's stage has exited cleanly.
CELL_DONE = "cell.json"
