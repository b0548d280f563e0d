#!/usr/bin/env python3
"""Deploys infra/template.yaml with the functions built by cargo-lambda.

    python infra/deploy.py [--stack NAME] [--outputs FILE] [--max-queue-delay SECONDS]

Zips each function's bootstrap (<cargo target dir>/lambda/<bin>/bootstrap, for every crate under
functions/; one zip per crate, so the web crate's `inbox` serves both InboxFunction and
NotifyFunction, which the template points at the same InboxCodeKey), uploads the zips to an artifacts bucket named after the account and region, creates or
updates the CloudFormation stack, waits for it, and writes its outputs as JSON (for the integration
tests and the CLI). Every request on the bucket names the caller's account as its expected owner:
a bucket of that name owned by anyone else is refused, never used. Endpoint and credentials come
from the usual AWS environment (AWS_ENDPOINT_URL for LocalStack)."""

import argparse
import hashlib
import io
import json
import os
import pathlib
import subprocess
import sys
import zipfile

import boto3
from botocore.exceptions import ClientError, WaiterError

ROOT = pathlib.Path(__file__).resolve().parent.parent


def cargo_target_dir() -> pathlib.Path:
    """Where cargo-lambda wrote the bootstraps: the cargo target directory, as cargo itself resolves
    it (CARGO_TARGET_DIR, or `build.target-dir` in a cargo config file), else ./target."""
    if os.environ.get("CARGO_TARGET_DIR"):
        return pathlib.Path(os.environ["CARGO_TARGET_DIR"]).resolve()
    try:
        metadata = subprocess.run(
            [os.environ.get("CARGO", "cargo"), "metadata", "--format-version", "1", "--no-deps", "--offline"],
            cwd=ROOT,
            capture_output=True,
            check=True,
            text=True,
        )
        return pathlib.Path(json.loads(metadata.stdout)["target_directory"]).resolve()
    except (OSError, subprocess.CalledProcessError, ValueError, KeyError):
        return (ROOT / "target").resolve()


TARGET_DIR = cargo_target_dir()
sys.path.insert(0, str(ROOT / "infra"))
from render import DeclarationError, load_functions  # noqa: E402  (the template's functions, from one glob)


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


def bootstrap(function) -> pathlib.Path:
    return TARGET_DIR / "lambda" / function.bin / "bootstrap"


class NotOurs(Exception):
    pass


def artifacts_bucket(s3, account: str, region: str) -> str:
    """Creates the artifacts bucket, or finds it already ours; refuses one owned by anyone else.

    The name is predictable, so another account may have taken it: S3 then answers
    BucketAlreadyExists to the create, or 403 to a request naming our account as the expected
    owner. Once confirmed ours it stays ours (only its owner can delete it)."""
    bucket = f"reanimate-artifacts-{account}-{region}"
    create = {"Bucket": bucket}
    if region != "us-east-1":
        create["CreateBucketConfiguration"] = {"LocationConstraint": region}
    try:
        s3.create_bucket(**create)
    except ClientError as e:
        code = e.response["Error"]["Code"]
        if code == "BucketAlreadyExists":
            raise NotOurs(f"bucket {bucket} exists and belongs to another account; refusing to upload code or the template there") from e
        if code != "BucketAlreadyOwnedByYou":
            raise
    try:
        s3.head_bucket(Bucket=bucket, ExpectedBucketOwner=account)
    except ClientError as e:
        if e.response["Error"]["Code"] in ("403", "AccessDenied", "Forbidden"):
            raise NotOurs(f"bucket {bucket} is not owned by account {account}; refusing to upload code or the template there") from e
        raise
    owned = {"Bucket": bucket, "ExpectedBucketOwner": account}
    s3.put_public_access_block(
        **owned,
        PublicAccessBlockConfiguration={
            "BlockPublicAcls": True,
            "IgnorePublicAcls": True,
            "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True,
        },
    )
    s3.put_bucket_encryption(
        **owned,
        ServerSideEncryptionConfiguration={"Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]},
    )
    return bucket


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

    try:
        functions = load_functions()
    except DeclarationError as e:
        print(f"deploy: {e}", file=sys.stderr)
        return 1
    session = boto3.session.Session()
    account = session.client("sts").get_caller_identity()["Account"]
    s3 = session.client("s3")
    try:
        bucket = artifacts_bucket(s3, account, session.region_name)
    except NotOurs as e:
        print(f"deploy: {e}", file=sys.stderr)
        return 1
    # The code and the template are deployed with CAPABILITY_IAM: every upload names our account
    # as the bucket's owner, so S3 refuses it if the bucket is anyone else's.
    owned = {"ExpectedBucketOwner": account}

    parameters = {
        "CodeBucket": bucket,
        "MaxQueueDelaySeconds": str(args.max_queue_delay),
        "Architecture": args.architecture,
        "MailRoot": args.mail_root,
    }
    for extra in args.parameter:
        key, _, value = extra.partition("=")
        parameters[key] = value
    missing = [f for f in functions if not bootstrap(f).is_file()]
    if missing:
        for f in missing:
            print(f"deploy: {bootstrap(f)} is missing (functions/{f.dir})", file=sys.stderr)
        print("deploy: build the functions first: make lambdas (cargo lambda build)", file=sys.stderr)
        return 1
    # One zip and one {Name}CodeKey per crate: functions sharing a crate's bootstrap (the web
    # inbox and the notifier) name the same key in the template.
    for f in functions:
        body = zipped(bootstrap(f))
        key = f"{f.dir}-{hashlib.sha256(body).hexdigest()[:16]}.zip"
        s3.put_object(Bucket=bucket, Key=key, Body=body, **owned)
        parameters[f"{f.name}CodeKey"] = key

    cfn = session.client("cloudformation")
    # Passed by URL: the template is over CloudFormation's 51,200-byte limit for an inline body.
    template = (ROOT / "infra" / "template.yaml").read_bytes()
    template_key = f"template-{hashlib.sha256(template).hexdigest()[:16]}.yaml"
    s3.put_object(Bucket=bucket, Key=template_key, Body=template, **owned)
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
