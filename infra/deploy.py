#!/usr/bin/env python3
"""Deploys infra/template.yaml with the functions built by cargo-lambda.

    python infra/deploy.py [--stack NAME] [--outputs FILE] [--max-queue-delay SECONDS]

Zips each target/lambda/<atom>/bootstrap, uploads the zips to an artifacts bucket (named after
the account and region), creates or updates the CloudFormation stack, waits for it, and writes its
outputs as JSON (for the integration tests and the CLI). Endpoint and credentials come from the
usual AWS environment (AWS_ENDPOINT_URL for LocalStack)."""

import argparse
import hashlib
import io
import json
import os
import pathlib
import sys
import zipfile

import boto3
from botocore.exceptions import ClientError, WaiterError

ROOT = pathlib.Path(__file__).resolve().parent.parent
# cargo-lambda writes the bootstraps under the cargo target directory (CARGO_TARGET_DIR if set).
TARGET_DIR = pathlib.Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target").resolve()
sys.path.insert(0, str(ROOT / "infra"))
from render import FUNCTIONS  # noqa: E402  (one list of functions for the template and the deploy)


def zipped(bootstrap: pathlib.Path) -> bytes:
    buffer = io.BytesIO()
    # The fastest deflate level: a debug bootstrap is ~80 MB, and level 6 takes three times as
    # long for a zip 15% smaller.
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        info = zipfile.ZipInfo("bootstrap")
        info.external_attr = 0o755 << 16
        info.compress_type = zipfile.ZIP_DEFLATED
        archive.writestr(info, bootstrap.read_bytes(), compresslevel=1)
    return buffer.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--stack", default="reanimate")
    parser.add_argument("--outputs", default=str(ROOT / ".localstack" / "stack-outputs.json"))
    parser.add_argument("--max-queue-delay", type=int, default=900)
    parser.add_argument("--architecture", default="x86_64", choices=["x86_64", "arm64"])
    parser.add_argument(
        "--mail-root",
        default=str(ROOT / "fixtures" / "mail"),
        help="where the functions find Maildir mailboxes (LocalStack runs them on this machine)",
    )
    parser.add_argument(
        "--parameter",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="another template parameter (ModelProvider=bedrock, ModelName=…); repeatable",
    )
    args = parser.parse_args()

    session = boto3.session.Session()
    account = session.client("sts").get_caller_identity()["Account"]
    bucket = f"reanimate-artifacts-{account}-{session.region_name}"
    s3 = session.client("s3")
    try:
        if session.region_name == "us-east-1":
            s3.create_bucket(Bucket=bucket)
        else:
            s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": session.region_name})
    except ClientError as e:
        if e.response["Error"]["Code"] not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise

    parameters = {
        "CodeBucket": bucket,
        "MaxQueueDelaySeconds": str(args.max_queue_delay),
        "Architecture": args.architecture,
        "MailRoot": args.mail_root,
    }
    for extra in args.parameter:
        key, _, value = extra.partition("=")
        parameters[key] = value
    for crate, name in FUNCTIONS:
        bootstrap = TARGET_DIR / "lambda" / crate / "bootstrap"
        if not bootstrap.is_file():
            print(f"deploy: {bootstrap} is missing; build with `cargo lambda build` first", file=sys.stderr)
            return 1
        body = zipped(bootstrap)
        key = f"{crate}-{hashlib.sha256(body).hexdigest()[:16]}.zip"
        s3.put_object(Bucket=bucket, Key=key, Body=body)
        parameters[f"{name}CodeKey"] = key

    cfn = session.client("cloudformation")
    # Passed by URL: the template is over CloudFormation's 51,200-byte limit for an inline body.
    template = (ROOT / "infra" / "template.yaml").read_bytes()
    template_key = f"template-{hashlib.sha256(template).hexdigest()[:16]}.yaml"
    s3.put_object(Bucket=bucket, Key=template_key, Body=template)
    request = {
        "StackName": args.stack,
        "TemplateURL": f"{s3.meta.endpoint_url}/{bucket}/{template_key}",
        "Parameters": [{"ParameterKey": k, "ParameterValue": v} for k, v in parameters.items()],
        "Capabilities": ["CAPABILITY_IAM"],
    }
    try:
        cfn.describe_stacks(StackName=args.stack)
        exists = True
    except ClientError:
        exists = False
    try:
        if exists:
            try:
                cfn.update_stack(**request)
                cfn.get_waiter("stack_update_complete").wait(StackName=args.stack, WaiterConfig={"Delay": 2, "MaxAttempts": 150})
            except ClientError as e:
                if "No updates are to be performed" not in str(e):
                    raise
        else:
            cfn.create_stack(**request)
            cfn.get_waiter("stack_create_complete").wait(StackName=args.stack, WaiterConfig={"Delay": 2, "MaxAttempts": 150})
    except WaiterError:
        for event in cfn.describe_stack_events(StackName=args.stack)["StackEvents"][:20]:
            if "FAILED" in event.get("ResourceStatus", ""):
                print(f"deploy: {event['LogicalResourceId']}: {event.get('ResourceStatusReason')}", file=sys.stderr)
        return 1

    stack = cfn.describe_stacks(StackName=args.stack)["Stacks"][0]
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
    # SES sends only from verified identities. On AWS this emails a confirmation link to the
    # sender address (and a new account's SES sandbox also needs each recipient verified).
    sender = outputs.get("DigestSender")
    if sender:
        session.client("ses").verify_email_identity(EmailAddress=sender)
    path = pathlib.Path(args.outputs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(outputs, indent=2))
    print(f"deploy: stack {args.stack} is {stack['StackStatus']}; outputs in {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
