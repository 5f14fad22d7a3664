"""One-time AWS set-up for cluster/aws.yaml: security group and least-privilege instance profiles.

    python scripts/aws_setup.py --bucket my-ckpts --ssh-cidr 203.0.113.7/32 [--region us-east-1]

Idempotent. Creates, in the default VPC:
- security group ``tuner-spot``: SSH from --ssh-cidr only, all traffic between its
  members; nothing else (Ray's dashboard, GCS and client ports stay private);
- instance profile ``tuner-worker``: read/write the checkpoint bucket, nothing else;
- instance profile ``tuner-head``: the bucket, plus what Ray's autoscaler needs to
  launch and terminate workers and hand them the worker profile.
Credentials come from the environment or your AWS profile.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
from typing import Any

GROUP_NAME = "tuner-spot"
WORKER_PROFILE = "tuner-worker"
HEAD_PROFILE = "tuner-head"
EC2_TRUST = {
    "Version": "2012-10-17",
    "Statement": [{"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}],
}


def bucket_policy(bucket: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
                "Resource": f"arn:aws:s3:::{bucket}",
            },
            {
                "Effect": "Allow",
                "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                "Resource": f"arn:aws:s3:::{bucket}/*",
            },
        ],
    }


def autoscaler_policy(account: str) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": [
                    "ec2:RunInstances",
                    "ec2:TerminateInstances",
                    "ec2:CreateTags",
                    "ec2:Describe*",
                    "ec2:RequestSpotInstances",
                    "ec2:CancelSpotInstanceRequests",
                    "ec2:DescribeSpotPriceHistory",
                    "pricing:GetProducts",
                ],
                "Resource": "*",
            },
            {
                "Effect": "Allow",
                "Action": ["iam:PassRole", "iam:GetInstanceProfile"],
                "Resource": [
                    f"arn:aws:iam::{account}:role/{WORKER_PROFILE}",
                    f"arn:aws:iam::{account}:instance-profile/{WORKER_PROFILE}",
                ],
            },
        ],
    }


def _profile(iam: Any, name: str, policies: dict[str, dict[str, Any]]) -> str:
    try:
        iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(EC2_TRUST))
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    for policy_name, document in policies.items():
        iam.put_role_policy(RoleName=name, PolicyName=policy_name, PolicyDocument=json.dumps(document))
    try:
        iam.create_instance_profile(InstanceProfileName=name)
        iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    except iam.exceptions.EntityAlreadyExistsException:
        pass
    return str(iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]["Arn"])


def _security_group(ec2: Any, ssh_cidr: str) -> str:
    vpc = ec2.describe_vpcs(Filters=[{"Name": "isDefault", "Values": ["true"]}])["Vpcs"][0]["VpcId"]
    found = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [GROUP_NAME]}, {"Name": "vpc-id", "Values": [vpc]}]
    )["SecurityGroups"]
    if found:
        return str(found[0]["GroupId"])
    group = str(ec2.create_security_group(GroupName=GROUP_NAME, Description="tuner spot cluster", VpcId=vpc)["GroupId"])
    ec2.authorize_security_group_ingress(
        GroupId=group,
        IpPermissions=[
            {"IpProtocol": "-1", "UserIdGroupPairs": [{"GroupId": group}]},  # intra-cluster
            {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": ssh_cidr}]},
        ],
    )
    return group


def setup(session: Any, bucket: str, ssh_cidr: str, endpoint_url: str | None = None) -> dict[str, str]:
    if ipaddress.ip_network(ssh_cidr, strict=False).prefixlen == 0:
        raise SystemExit("error: --ssh-cidr 0.0.0.0/0 would open SSH to the internet: give your own address/32")
    ec2 = session.client("ec2", endpoint_url=endpoint_url)
    iam = session.client("iam", endpoint_url=endpoint_url)
    account = session.client("sts", endpoint_url=endpoint_url).get_caller_identity()["Account"]
    return {
        "security_group": _security_group(ec2, ssh_cidr),
        "worker_profile": _profile(iam, WORKER_PROFILE, {"checkpoint-bucket": bucket_policy(bucket)}),
        "head_profile": _profile(
            iam, HEAD_PROFILE, {"checkpoint-bucket": bucket_policy(bucket), "autoscaler": autoscaler_policy(account)}
        ),
    }


def main() -> None:
    import boto3

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bucket", required=True)
    parser.add_argument("--ssh-cidr", required=True, help="the only addresses that may SSH in, e.g. 203.0.113.7/32")
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args()
    print(json.dumps(setup(boto3.Session(region_name=args.region), args.bucket, args.ssh_cidr), indent=2))


if __name__ == "__main__":
    main()
