"""Prints a table: kpt's figure next to a baseline measured in the same run, and their ratio."""
