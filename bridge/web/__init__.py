"""The HTTP layer: it authenticates, parses and hands over; it never talks to Pachca itself."""
