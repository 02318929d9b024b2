"""The executions API: submit, read, list, cancel and delete executions, and fetch their results."""
