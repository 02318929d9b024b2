"""The in-queue dead-letter handler: fails executions whose message ran out of retries."""
