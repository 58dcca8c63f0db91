"""The workers as plain classes: the single-process loop calls them directly; Ray wraps them at spawn."""
