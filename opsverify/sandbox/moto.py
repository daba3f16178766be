"""The moto server: S3 and the AWS APIs (ECS, ELBv2, CloudWatch, Logs, EC2, STS) on one
local port, seeded like the gogooku3 MinIO bucket and the T-Developer Fargate service.

What moto simulates, and so what the faults can show (verified against moto 5.2):

- ECS: moto runs no scheduler and starts no task for a service. A new service reports
  ``runningCount`` from ``MOTO_ECS_SERVICE_RUNNING`` (set to 1 here, the rest pending) and a
  deployment whose ``failedTasks`` is ``MOTO_ECS_SERVICE_FAILED_TASKS`` (1 here), rollout
  ``IN_PROGRESS`` unless all its tasks run. The counts change only when an ``UpdateService``
  names a ``desiredCount``: ``runningCount`` becomes that count at once (pending 0).
  ``forceNewDeployment`` gives the service's one deployment a new id (its counts, rollout and
  task definition stay as they were); a new ``taskDefinition`` changes the service's, not the
  deployment's; the service only ever lists that one deployment (never the previous one,
  which AWS keeps ACTIVE while a new revision rolls out). Registered container instances and
  RunTask (a 500 from moto 5.2 for this task definition) do not change a service's counts.
  So a healthy service is created and then updated, ``ecs-degraded`` re-creates it,
  ``ecs-bad-revision`` re-creates it on a new revision, and the remediation's UpdateService
  restates the desired count (opsverify/remediation/aws.py).
- ELBv2: a registered target is always ``healthy`` unless it is an EC2 instance that is
  stopped (``unused``, ``Target.InvalidState``); moto runs no health checks, so
  ``alb-target-stopped`` stops an instance.
- CloudWatch: a new alarm is ``OK``; ``SetAlarmState`` changes it.
- Logs: ``FilterLogEvents`` honours the time window, pagination and plain-term patterns such
  as ``ERROR`` (case-sensitive); it does not implement ``?A ?B`` alternatives.

Secure by default (checks/security): the bucket has a public access block and default
encryption; no security group is open to the world; the secret rotates; the log group keeps
30 days; the ECR repository scans on push and its image's scan has no finding >= HIGH; the
task definition takes its secret from Secrets Manager. What moto does and does not do there:

- S3: public access blocks are stored, never enforced. A bucket policy's Deny applies to
  every object request whatever its ``Condition`` (moto evaluates only ``StringEquals``), and
  this endpoint is plain HTTP anyway: a TLS-only policy (deny ``aws:SecureTransport``
  false) would refuse every object the sandbox writes and reads. So the bucket has none, and
  environments/sandbox.yaml opts its target out of ``tls_only``; tests put one on.
- ECR: a push to a scan-on-push repository starts no scan (``StartImageScan`` does), and
  moto has no scanner: a scan's findings are what ``/moto-api/static/ecr/scan-finding-
  results`` was given for that image (otherwise a fixed fake HIGH finding);
  ``DescribeImages`` carries no ``imageScanFindingsSummary``.
- Secrets Manager: a rotation needs no Lambda (AWS needs one) and happens within the call:
  a new AWSCURRENT version (for a secret that has a value), dated now (``LastRotatedDate``
  cannot be set in the past); ``RotationRules`` turn rotation on.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import signal
import subprocess
import sys
import time
from typing import Any, ClassVar

import requests

from opsverify.sandbox.base import SandboxContext
from opsverify.sandbox.faults import (
    BAD_IMAGE_TAG,
    DB_GROUP,
    FAULT_ERRORS,
    FAULTS_OF,
    LOG_GROUP,
    SERVICE,
    TARGET_GROUP,
    TASK_FAMILY,
    UNROTATED_SECRET,
)
from opsverify.sandbox.process import free_port, port_open, spawn, stop, wait_until
from opsverify.sandbox.spec import MotoComponent

ACCESS_KEY_ID = "AKIAOPSVERIFYSANDBOX"
IMAGE = "ami-0a1b2c3d4e5f60718"  # any id: moto does not check that the image exists
CLUSTER = "t-developer-cluster"
LOAD_BALANCER = "t-developer-alb"
LOG_STREAM = "t-developer-service/api/0f3c2a"
ALARM_PREFIX = "t-developer-"
ALARMS = {  # name -> (metric, namespace, threshold)
    "t-developer-5xx": ("HTTPCode_Target_5XX_Count", "AWS/ApplicationELB", 10.0),
    "t-developer-cpu-high": ("CPUUtilization", "AWS/ECS", 70.0),
    "t-developer-memory-high": ("MemoryUtilization", "AWS/ECS", 80.0),
    "t-developer-low-traffic": ("RequestCount", "AWS/ApplicationELB", 1.0),
}
KNOWN_FIRING = "t-developer-low-traffic"  # in ALARM on purpose; the environment allows it
OBJECTS = (
    "backups/latest.tar.gz", "backups/data_20250107.tar.gz", "backups/data_20250108.tar.gz",
    "datasets/prices/2025-01.parquet", "datasets/prices/2025-02.parquet",
    "datasets/features/v3.parquet", "models/lgbm/2025-02-01.pkl",
)
SEED_ERRORS = 3
LOG_RETENTION_DAYS = 30
VPC_CIDR = "10.20.0.0/16"
DB_SECRET = "t-developer/database"  # noqa: S105 - a secret's name
REPOSITORY = "t-developer/api"
IMAGE_TAG = "2025.02"


class MotoServer:
    """``python -m moto.server`` on 127.0.0.1; all state lives in its memory."""

    name: ClassVar[str] = "moto"
    install_hint: ClassVar[str] = "pip install 'moto[server]'"
    faults: ClassVar[dict[str, str]] = FAULTS_OF["moto"]

    def __init__(self, spec: MotoComponent, ctx: SandboxContext) -> None:
        self.spec = spec
        self.port = free_port()
        self.secret_access_key = ctx.password
        self.log = ctx.workdir / "moto.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._instances: list[str] = []
        self._network: tuple[list[str], str] = ([], "")  # subnets, security group
        self._secret_arn = ""

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def variables(self) -> dict[str, str]:
        return {
            "SANDBOX_AWS_ENDPOINT": self.endpoint,
            "SANDBOX_AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "SANDBOX_AWS_SECRET_ACCESS_KEY": self.secret_access_key,
        }

    def prepare(self) -> None:
        # moto.server needs the [server] extra (flask, flask-cors) besides moto itself.
        for module in ("moto", "flask", "flask_cors"):
            if importlib.util.find_spec(module) is None:
                raise FileNotFoundError(f"the moto server is not installed ({self.install_hint})")

    def launch(self) -> None:
        # A new ECS service reports one running task and one failed (see the module
        # docstring); moto's catalogue of public AMIs costs seconds at every reset and is not
        # needed.
        self.process = spawn(
            ["env", "MOTO_ECS_SERVICE_RUNNING=1", "MOTO_ECS_SERVICE_FAILED_TASKS=1",
             "MOTO_EC2_LOAD_DEFAULT_AMIS=false",
             sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            log=self.log,
        )

    def ready(self) -> None:
        wait_until(self._answers, timeout_s=30, what="moto server", process=self.process,
                   log=self.log)
        self.seed()

    def stop(self) -> None:
        if self.process is not None:
            # All state is in memory and meant to be lost; a clean exit only costs seconds
            # of interpreter teardown.
            stop(self.process, signal.SIGKILL)

    def client(self, service: str) -> Any:
        """A write-capable boto3 client, for seeding and faults only."""
        import boto3  # deferred: a run without AWS targets never loads it
        from botocore.config import Config

        return boto3.client(
            service, endpoint_url=self.endpoint, region_name=self.spec.region,
            aws_access_key_id=ACCESS_KEY_ID, aws_secret_access_key=self.secret_access_key,
            config=Config(connect_timeout=5, read_timeout=30,
                          retries={"total_max_attempts": 1},
                          s3={"addressing_style": "path"}),
        )

    def reset(self) -> None:
        """Forget every resource and seed again: a healthy sandbox, for the suite's tests."""
        requests.post(f"{self.endpoint}/moto-api/reset", timeout=10).raise_for_status()
        self.seed()

    def _answers(self) -> bool:
        if not port_open(self.port):
            return False
        try:
            return requests.get(f"{self.endpoint}/moto-api/data.json", timeout=2).ok
        except requests.RequestException:
            return False

    # -- seed --------------------------------------------------------------------------
    def seed(self) -> None:
        self._seed_s3()
        subnets, group, vpc = self._seed_network()
        secret = self._seed_secrets()
        self._seed_ecs(subnets, group, secret)
        self._seed_alb(subnets, group, vpc)
        self._seed_alarms()
        self._seed_logs()
        self._seed_ecr()

    def _seed_s3(self) -> None:
        s3 = self.client("s3")
        config = ({} if self.spec.region == "us-east-1" else
                  {"CreateBucketConfiguration": {"LocationConstraint": self.spec.region}})
        s3.create_bucket(Bucket=self.spec.bucket, **config)
        for key in OBJECTS:
            s3.put_object(Bucket=self.spec.bucket, Key=key, Body=f"{key}\n".encode())
        s3.put_public_access_block(Bucket=self.spec.bucket, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True})
        s3.put_bucket_encryption(Bucket=self.spec.bucket, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"},
                       "BucketKeyEnabled": True}]})

    def _make_public(self) -> None:
        """The s3-public fault: the block goes, and a statement letting anyone read every
        object joins whatever policy the bucket has."""
        s3 = self.client("s3")
        s3.delete_public_access_block(Bucket=self.spec.bucket)
        try:
            policy = json.loads(s3.get_bucket_policy(Bucket=self.spec.bucket)["Policy"])
        except s3.exceptions.ClientError:
            policy = {"Version": "2012-10-17", "Statement": []}
        policy["Statement"].append({
            "Sid": "PublicRead", "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject",
            "Resource": f"arn:aws:s3:::{self.spec.bucket}/*"})
        s3.put_bucket_policy(Bucket=self.spec.bucket, Policy=json.dumps(policy))

    def _seed_network(self) -> tuple[list[str], str, str]:
        ec2 = self.client("ec2")
        vpc = ec2.create_vpc(CidrBlock=VPC_CIDR)["Vpc"]["VpcId"]
        zones = [z["ZoneName"] for z in ec2.describe_availability_zones()["AvailabilityZones"]]
        subnets = [ec2.create_subnet(VpcId=vpc, CidrBlock=f"10.20.{i}.0/24",
                                     AvailabilityZone=zone)["Subnet"]["SubnetId"]
                   for i, zone in enumerate(zones[:2])]
        group = ec2.create_security_group(GroupName="t-developer-service",
                                          Description="T-Developer service",
                                          VpcId=vpc)["GroupId"]
        # The service answers the load balancer inside the VPC; the database only the service.
        ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
            "IpProtocol": "tcp", "FromPort": 8000, "ToPort": 8000,
            "IpRanges": [{"CidrIp": VPC_CIDR, "Description": "ALB in the VPC"}]}])
        database = ec2.create_security_group(GroupName=DB_GROUP, Description="T-Developer "
                                             "PostgreSQL", VpcId=vpc)["GroupId"]
        ec2.authorize_security_group_ingress(GroupId=database, IpPermissions=[{
            "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
            "UserIdGroupPairs": [{"GroupId": group, "Description": "the service"}]}])
        return subnets, group, vpc

    def _seed_secrets(self) -> str:
        """The database password, rotated every 30 days (moto rotates without a Lambda, and
        dates the rotation now); its ARN, which the task definition refers to."""
        secrets = self.client("secretsmanager")
        arn = str(secrets.create_secret(Name=DB_SECRET, SecretString=json.dumps(
            {"username": "t_developer", "password": "never-read-by-opsverify"}))["ARN"])
        secrets.rotate_secret(SecretId=DB_SECRET, RotationRules={"AutomaticallyAfterDays": 30})
        return arn

    def _seed_ecs(self, subnets: list[str], group: str, secret: str) -> None:
        ecs = self.client("ecs")
        ecs.create_cluster(clusterName=CLUSTER)
        self._secret_arn = secret
        self.register_revision(IMAGE_TAG)
        self._network = (subnets, group)
        # Created at 1 task (its deployment COMPLETED), then scaled to 2: moto reports the
        # desired count as running once a service has been updated.
        self.create_service(desired=1)
        ecs.update_service(cluster=CLUSTER, service=SERVICE, desiredCount=2)

    def register_revision(self, image_tag: str) -> str:
        """A new revision of the service's task definition, running ``image_tag``; its ARN."""
        secret = self._secret_arn
        return str(self.client("ecs").register_task_definition(
            family=TASK_FAMILY, requiresCompatibilities=["FARGATE"], networkMode="awsvpc",
            cpu="512", memory="1024",
            containerDefinitions=[{
                "name": "api", "image": f"{REPOSITORY}:{image_tag}", "essential": True,
                "portMappings": [{"containerPort": 8000}],
                "environment": [{"name": "APP_ENV", "value": "production"},
                                {"name": "DATABASE_SECRET_ARN", "value": secret}],
                "secrets": [{"name": "DATABASE_PASSWORD", "valueFrom": secret}]}],
        )["taskDefinition"]["taskDefinitionArn"])

    def create_service(self, desired: int, name: str = SERVICE,
                       task_definition: str = TASK_FAMILY) -> None:
        """A service in the cluster: 1 task running, the rest pending (module docstring)."""
        subnets, group = self._network
        self.client("ecs").create_service(
            cluster=CLUSTER, serviceName=name, taskDefinition=task_definition,
            desiredCount=desired,
            launchType="FARGATE",
            networkConfiguration={"awsvpcConfiguration": {"subnets": subnets,
                                                          "securityGroups": [group]}},
        )

    def _seed_alb(self, subnets: list[str], group: str, vpc: str) -> None:
        ec2, elb = self.client("ec2"), self.client("elbv2")
        reservation = ec2.run_instances(ImageId=IMAGE, MinCount=2, MaxCount=2,
                                        InstanceType="t3.small", SubnetId=subnets[0])
        self._instances = [i["InstanceId"] for i in reservation["Instances"]]
        balancer = elb.create_load_balancer(Name=LOAD_BALANCER, Subnets=subnets,
                                            SecurityGroups=[group], Scheme="internal",
                                            Type="application")["LoadBalancers"][0]
        target_group = elb.create_target_group(
            Name=TARGET_GROUP, Protocol="HTTP", Port=8000, VpcId=vpc, TargetType="instance",
            HealthCheckPath="/health")["TargetGroups"][0]["TargetGroupArn"]
        elb.create_listener(LoadBalancerArn=balancer["LoadBalancerArn"], Protocol="HTTP",
                            Port=80, DefaultActions=[{"Type": "forward",
                                                      "TargetGroupArn": target_group}])
        elb.register_targets(TargetGroupArn=target_group,
                             Targets=[{"Id": i, "Port": 8000} for i in self._instances])

    def _seed_alarms(self) -> None:
        cloudwatch = self.client("cloudwatch")
        for name, (metric, namespace, threshold) in ALARMS.items():
            below = name == KNOWN_FIRING
            cloudwatch.put_metric_alarm(
                AlarmName=name, MetricName=metric, Namespace=namespace, Statistic="Sum"
                if metric.endswith("Count") else "Average", Period=300, EvaluationPeriods=1,
                Threshold=threshold,
                ComparisonOperator="LessThanThreshold" if below else "GreaterThanThreshold",
            )
        cloudwatch.set_alarm_state(
            AlarmName=KNOWN_FIRING, StateValue="ALARM",
            StateReason="Threshold Crossed: 1 datapoint [0.0] was less than the threshold (1.0)")

    def _seed_logs(self) -> None:
        logs = self.client("logs")
        logs.create_log_group(logGroupName=LOG_GROUP)
        logs.put_retention_policy(logGroupName=LOG_GROUP, retentionInDays=LOG_RETENTION_DAYS)
        logs.create_log_stream(logGroupName=LOG_GROUP, logStreamName=LOG_STREAM)
        now = int(time.time() * 1000)
        # Errors from two days ago, outside a 24 h window (one batch may not span 24 h).
        self._put_events([(now - 2 * 86_400_000 + i * 1000, f"ERROR pipeline timeout #{i}")
                          for i in range(10)])
        self._put_events([(now - 3_600_000 + i * 60_000,
                           f"ERROR generation failed project={i}" if i % 7 == 3 else
                           f"INFO GET /health 200 {12 + i} ms")
                          for i in range(7 * SEED_ERRORS)])

    def _seed_ecr(self) -> None:
        """A scan-on-push repository whose image was scanned: moto starts no scan on push
        and has no scanner, so the scan is started here and its findings handed to moto."""
        ecr = self.client("ecr")
        ecr.create_repository(repositoryName=REPOSITORY,
                              imageScanningConfiguration={"scanOnPush": True})
        self.push_image(REPOSITORY, IMAGE_TAG, {"MEDIUM": 2, "LOW": 5})

    def push_image(self, repository: str, tag: str, severities: dict[str, int]) -> None:
        """Push an image, scan it, and give its scan these finding counts by severity."""
        ecr = self.client("ecr")
        config = "sha256:" + hashlib.sha256(f"{repository}:{tag}".encode()).hexdigest()
        ecr.put_image(repositoryName=repository, imageTag=tag, imageManifest=json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json",
                       "size": 1469, "digest": config}, "layers": []}))
        requests.post(f"{self.endpoint}/moto-api/static/ecr/scan-finding-results", timeout=10,
                      json={"region": self.spec.region, "results": [{
                          "registryId": "123456789012", "repositoryName": repository,
                          "imageId": {"imageTag": tag},
                          "imageScanStatus": {"status": "COMPLETE",
                                              "description": "The scan was completed "
                                                             "successfully."},
                          "imageScanFindings": {"findings": [],
                                                "findingSeverityCounts": severities}}]},
                      ).raise_for_status()
        ecr.start_image_scan(repositoryName=repository, imageId={"imageTag": tag})

    def _put_events(self, events: list[tuple[int, str]]) -> None:
        self.client("logs").put_log_events(
            logGroupName=LOG_GROUP, logStreamName=LOG_STREAM,
            logEvents=[{"timestamp": ts, "message": text} for ts, text in events])

    # -- faults ------------------------------------------------------------------------
    def inject(self, faults: frozenset[str]) -> None:
        if "s3-prefix-missing" in faults:
            s3 = self.client("s3")
            for key in OBJECTS:
                if key.startswith("datasets/"):
                    s3.delete_object(Bucket=self.spec.bucket, Key=key)
        if "ecs-degraded" in faults or "ecs-bad-revision" in faults:
            # Re-created: 1 running (rollout IN_PROGRESS, 1 failed task), 1 pending.
            revision = (self.register_revision(BAD_IMAGE_TAG) if "ecs-bad-revision" in faults
                        else TASK_FAMILY)
            self.client("ecs").delete_service(cluster=CLUSTER, service=SERVICE, force=True)
            self.create_service(desired=2, task_definition=revision)
        if "alb-target-stopped" in faults:
            self.client("ec2").stop_instances(InstanceIds=self._instances[:1])
        if "alarm-firing" in faults:
            self.client("cloudwatch").set_alarm_state(
                AlarmName="t-developer-5xx", StateValue="ALARM",
                StateReason="Threshold Crossed: 1 datapoint [57.0] was greater than the "
                            "threshold (10.0)")
        if "s3-public" in faults:
            self._make_public()
        if "sg-open-db" in faults:
            ec2 = self.client("ec2")
            group = ec2.describe_security_groups(Filters=[
                {"Name": "group-name", "Values": [DB_GROUP]}])["SecurityGroups"][0]["GroupId"]
            ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[{
                "IpProtocol": "tcp", "FromPort": 5432, "ToPort": 5432,
                "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "debugging, temporary"}]}])
        if "secret-not-rotated" in faults:
            self.client("secretsmanager").create_secret(
                Name=UNROTATED_SECRET, SecretString="sk-never-read-by-opsverify")
        if "log-errors" in faults:
            now = int(time.time() * 1000)
            self._put_events([(now - (FAULT_ERRORS - i) * 1000,
                               f"ERROR pipeline stage failed: upstream timeout (request {i})")
                              for i in range(FAULT_ERRORS)])
