"""The fleet starter: a scheduled function that sizes each GPU group to its queue's backlog at once."""
