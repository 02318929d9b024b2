"""The out-queue consumer: brings the worker's started/progress/finished events into the execution records."""
