"""The stack of one stagehub stage: data, queues, functions, API, a GPU fleet per backend, monitoring."""

from __future__ import annotations

import dataclasses

import aws_cdk as cdk
from constructs import Construct

from functions import routes
from infra.api import Api
from infra.config import StagehubConfig
from infra.data import Data
from infra.functions import Functions
from infra.gpu_fleet import FleetStarter, GpuFleet
from infra.monitoring import Monitoring
from infra.network import Network
from infra.queues import Queues
from infra.webapp import LateValue, WebApp
from shared import resources as res


def stack_name(config: StagehubConfig) -> str:
    return f"stagehub-{config.stage}"


class StagehubStack(cdk.Stack):
    def __init__(self, scope: Construct, construct_id: str, *, config: StagehubConfig, **kwargs: object) -> None:
        super().__init__(scope, construct_id, **kwargs)  # type: ignore[arg-type]
        names = res.ResourceNames(stage=config.stage, account=cdk.Aws.ACCOUNT_ID)
        # CORS: the origins corsAllowOrigins names, else the web app's own (known once WebApp exists, below).
        webapp_origin = LateValue()
        config = dataclasses.replace(config, cors_allow_origins=config.cors_allow_origins or (webapp_origin.token,))
        self.data = Data(self, "Data", config=config, names=names)
        self.queues = Queues(self, "Queues", config=config, names=names)
        self.functions = Functions(self, "Functions", config=config, data=self.data, queues=self.queues)
        for name in routes.API_FUNCTIONS:
            self.functions[name].add_environment(
                "CORS_ALLOW_ORIGINS", self.to_json_string(list(config.cors_allow_origins))
            )
        self.api = Api(self, "Api", config=config, functions=self.functions)
        self.network = Network(self, "Network", config=config)  # one VPC for every backend's fleet
        self.webapp = WebApp(
            self,
            "WebApp",
            rest_api=self.api.rest_api,
            uploads_bucket_name=names.bucket(res.UPLOADS_BUCKET),
            results_bucket_name=names.bucket(res.RESULTS_BUCKET),
            access_logs=self.data.access_logs,
            removal_policy=cdk.RemovalPolicy.RETAIN if config.retain_data else cdk.RemovalPolicy.DESTROY,
        )
        webapp_origin.set(self.webapp.origin)
        self.fleets = [
            GpuFleet(
                self,
                f"Fleet{_pascal(backend)}",
                config=config,
                backend=backend,
                network=self.network,
                data=self.data,
                queues=self.queues,
            )
            for backend in names.backends
        ]
        self.fleet_starter = FleetStarter(self, "FleetStarter", config=config, fleets=self.fleets)
        self.monitoring = Monitoring(
            self,
            "Monitoring",
            config=config,
            rest_api=self.api.rest_api,
            functions=self.functions,
            queues=self.queues,
            fleets=self.fleets,
        )
        for fleet in self.fleets:
            fleet.notify(self.monitoring.topic)
        cdk.CfnOutput(self, "WebAppUrl", value=self.webapp.url, description="The web app (CloudFront)")
        cdk.CfnOutput(self, "ApiUrl", value=self.api.rest_api.url, description="Base URL of the API (API.md)")
        cdk.CfnOutput(
            self,
            "DashboardUrl",
            value=f"https://console.aws.amazon.com/cloudwatch/home?region={self.region}#dashboards:name="
            f"{self.monitoring.dashboard.dashboard_name}",
        )
        cdk.CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn)
        for fleet in self.fleets:
            cdk.CfnOutput(self, f"{_pascal(fleet.backend)}GroupName", value=fleet.group_name)


def _pascal(name: str) -> str:
    return "".join(part.capitalize() for part in name.split("-"))
