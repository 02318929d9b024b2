"""The CDK app's constructs: data, queues, API, GPU fleet and monitoring, wired by `infra.stack`."""
