"""The one VPC every GPU fleet shares, with no NAT gateway.

- `workerSubnets=public` (default): public subnets. The workers get a public IPv4 address (billed only while an
  instance runs) and reach AWS through the internet gateway; their security group has no inbound rule and the
  launch template requires IMDSv2 with a hop limit of 1, so nothing can connect to them and no container or
  proxy can borrow their role. Idle, this network costs nothing.
- `workerSubnets=private`: isolated subnets, no route out, and interface endpoints for every AWS API the
  workers call (SQS, CloudWatch metrics and logs, Auto Scaling, SSM Session Manager); a fixed cost per endpoint
  and zone (docs/ops.md). Model sources then have to be S3 prefixes.

Both: free gateway endpoints for S3 and DynamoDB, and flow logs of rejected traffic.
"""

from __future__ import annotations

import aws_cdk as cdk
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra import nag
from infra.config import StagehubConfig
from infra.functions import retention_days

# What the worker calls besides S3 and DynamoDB, as interface endpoints for isolated subnets.
INTERFACE_SERVICES = {
    "Sqs": ec2.InterfaceVpcEndpointAwsService.SQS,
    "Monitoring": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_MONITORING,
    "Logs": ec2.InterfaceVpcEndpointAwsService.CLOUDWATCH_LOGS,
    "AutoScaling": ec2.InterfaceVpcEndpointAwsService.AUTOSCALING,
    "Ssm": ec2.InterfaceVpcEndpointAwsService.SSM,
    "SsmMessages": ec2.InterfaceVpcEndpointAwsService.SSM_MESSAGES,
    "Ec2Messages": ec2.InterfaceVpcEndpointAwsService.EC2_MESSAGES,
}


class Network(Construct):
    """The workers' VPC and the subnets their groups launch into."""

    def __init__(self, scope: Construct, construct_id: str, *, config: StagehubConfig) -> None:
        super().__init__(scope, construct_id)
        self.private = config.worker_subnets == "private"
        subnet_type = ec2.SubnetType.PRIVATE_ISOLATED if self.private else ec2.SubnetType.PUBLIC
        self.vpc = ec2.Vpc(
            self,
            "Vpc",
            max_azs=None if config.availability_zones else 2,
            availability_zones=list(config.availability_zones) or None,
            nat_gateways=0,
            subnet_configuration=[
                ec2.SubnetConfiguration(
                    name="workers",
                    subnet_type=subnet_type,
                    cidr_mask=20,
                    map_public_ip_on_launch=None if self.private else True,
                )
            ],
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3),
                "DynamoDB": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.DYNAMODB),
            },
        )
        self.worker_subnets = ec2.SubnetSelection(subnet_type=subnet_type)
        if self.private:
            self._interface_endpoints()
        flow_logs = logs.LogGroup(
            self,
            "FlowLogsGroup",
            retention=retention_days(config.log_retention_days),
            removal_policy=cdk.RemovalPolicy.DESTROY,
        )
        self.vpc.add_flow_log(
            "FlowLogs",
            destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs),
            traffic_type=ec2.FlowLogTrafficType.REJECT,
        )

    def _interface_endpoints(self) -> None:
        """One security group for all endpoints: HTTPS from inside the VPC, nothing else."""
        endpoints = ec2.SecurityGroup(
            self,
            "EndpointSecurityGroup",
            vpc=self.vpc,
            description="stagehub VPC endpoints: HTTPS from inside the VPC only",
            allow_all_outbound=False,
        )
        endpoints.add_ingress_rule(ec2.Peer.ipv4(self.vpc.vpc_cidr_block), ec2.Port.tcp(443), "HTTPS from the VPC")
        nag.acknowledge(
            endpoints,
            "EC23",
            "the only ingress is HTTPS from the VPC's own CIDR block (a token cdk-nag cannot resolve), not 0.0.0.0/0",
        )
        for name, service in INTERFACE_SERVICES.items():
            self.vpc.add_interface_endpoint(
                name,
                service=service,
                subnets=self.worker_subnets,
                private_dns_enabled=True,
                security_groups=[endpoints],
                open=False,
            )
