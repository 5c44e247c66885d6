"""Errors caused by the user's input (recipes, data files, models), reported without a traceback."""


class UserError(Exception):
    """Bad input that the user can fix; the message names the file, line or key."""
