import os

# Before aws_cdk starts its Node.js process: the CDK tools run on Node 20 here and need not say so on every run.
os.environ.setdefault("JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION", "20")
