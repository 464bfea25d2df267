"""Getting objects in: each source parses raw objects into the model and hands them to
the store."""
