#!/usr/bin/env python3
"""Renders infra/template.yaml from the functions' own declarations.

    python infra/render.py          # rewrite infra/template.yaml
    python infra/render.py --check  # fail if the committed template is not what this renders

Each crate under functions/ declares what its Lambda needs in its Cargo.toml:

    [package.metadata.reanimate]
    atom = "countdown"                      # the atom type it serves (or `sweeper = true`, `web = true`)
    profile = "steps"                       # how it is sized: steps | activities (PROFILES below)
    sends_to = ["countdown", "fan-out"]     # atom types whose queues its steps send to
    uses = []                               # more it may call: models | mail | mail-disconnect | digests

From those, per atom: a queue (whose policy admits only the roles that send to it) with a
dead-letter queue and an alarm, a log group, a least-privilege role, a function and an event
source mapping. The sweeper is one more function, invoked every minute by a schedule. The web
crate (`web = true`, exactly one, declaring nothing else) is two functions from one bootstrap: the
web inbox and operator console behind a public function URL (it authenticates every request
itself), and the notifier fed by the notify queue, where saved steps announce requests that name a
person. Adding a crate under functions/ is the only step: the deploy (infra/deploy.py) and the
Makefile find the functions the same way. The template is built as data and written with PyYAML,
and every function's environment is checked against Lambda's 4 KB limit (ENV_LIMIT)."""

import json
import pathlib
import re
import sys
import tomllib
from dataclasses import dataclass

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "template.yaml"

# How a function is sized. Every record is handled within the invocation's deadline (records of
# different instances in a batch run concurrently; a record still running near the deadline is
# handed back). The queue's visibility timeout is six times the function timeout, as AWS
# recommends for SQS event sources, and MaximumConcurrency caps the concurrent invocations per
# queue, so a fan-in's children contend for their parent with at most that many writers.
# Batching: up to 10 records an invocation (one Lambda request, one ReceiveMessage and one
# DeleteMessageBatch shared by ten steps under load) and no batching window: a window delays every
# hop of a chain of steps by its length, and under load SQS fills batches without one. A team
# whose atoms are batch-only (no one waits on them) can trade latency for invocations with a
# window of a second or more and BatchSize up to 100 (see BENCHMARKS.md, "Cost per step").
PROFILES = {
    "steps": dict(timeout=30, batch=10, window=0, visibility=180, concurrency=10),
    # Atoms whose activities call a model or a mailbox: a model call may take 60 s and be retried
    # (the activities' time limit is 250 s); a batch the size of the model client's concurrency.
    "activities": dict(timeout=300, batch=4, window=0, visibility=1800, concurrency=5),
}
LOG_RETENTION_DAYS = 30
# The notify queue: saved steps announce there the requests that name a person, and the notifier
# emails them a link. Named like an atom's queue (NotifyQueue, NotifyDeadLetters, their outputs) so
# that `reanimate dead-letters` lists and redrives it as "notify"; sized as the step functions (an
# email per record).
NOTIFY = "notify"
NOTIFY_PROFILE = PROFILES["steps"]


# --- CloudFormation intrinsics, written as their short tags ---------------------------------------
class Tagged:
    """An intrinsic function: `!Ref X`, `!GetAtt X.Y`, `!Sub …`, `!If […]`, …"""

    def __init__(self, tag: str, value):
        self.tag = tag
        self.value = value


def ref(name: str) -> Tagged:
    return Tagged("!Ref", name)


def get_att(resource: str, attribute: str) -> Tagged:
    return Tagged("!GetAtt", f"{resource}.{attribute}")


def sub(text: str, variables: dict | None = None) -> Tagged:
    return Tagged("!Sub", text if variables is None else [text, variables])


def if_(condition: str, then, otherwise) -> Tagged:
    return Tagged("!If", [condition, then, otherwise])


def arn(service: str, resource: str, region: bool = True, account: bool = True) -> Tagged:
    """An ARN in this partition (and region and account unless told otherwise), as `!Sub`."""
    return sub(
        f"arn:${{AWS::Partition}}:{service}:{'${AWS::Region}' if region else ''}:"
        f"{'${AWS::AccountId}' if account else ''}:{resource}"
    )


NO_VALUE = ref("AWS::NoValue")
SHORT_TAGS = {"!Ref", "!GetAtt", "!Sub"}


class Dumper(yaml.SafeDumper):
    # `!Ref Name`, not `!Ref 'Name'`: PyYAML quotes every explicitly tagged scalar, though plain
    # is valid wherever the untagged string could be plain.
    def choose_scalar_style(self):
        style = super().choose_scalar_style()
        event, analysis = self.event, self.analysis
        if style == "'" and not event.style and event.tag in SHORT_TAGS and not (analysis.empty or analysis.multiline):
            if analysis.allow_flow_plain if self.flow_level else analysis.allow_block_plain:
                return ""
        return style

    # Sequences indented under their key, as people write CloudFormation.
    def increase_indent(self, flow=False, indentless=False):
        return super().increase_indent(flow, False)

    # A list used twice (the queue ARNs) is written twice, not as a YAML anchor.
    def ignore_aliases(self, data):
        return True


# Short collections of scalars go on one line (`[x86_64, arm64]`, `{Name: …, Value: !Ref …}`), as
# people write CloudFormation; anything longer or nested deeper is a block.
FLOW_WIDTH = 90


# Resources and policy statements always read as blocks.
BLOCK_KEYS = {"Type", "Effect"}


def _flat_length(value) -> int | None:
    """The rough one-line length of `value`, or None if it should not be on one line."""
    if isinstance(value, Tagged):
        inner = _flat_length(value.value)
        return None if inner is None else len(value.tag) + 1 + inner
    if isinstance(value, (str, int, bool)):
        return len(str(value)) + 2
    if isinstance(value, dict):
        if BLOCK_KEYS & value.keys():
            return None
        parts = [part for item in value.items() for part in item]
    elif isinstance(value, list):
        parts = value
    else:
        return None
    total = 2
    for part in parts:
        length = _flat_length(part)
        if length is None:
            return None
        total += length + 2
    return total


def _flow(value) -> bool:
    length = _flat_length(value)
    return length is not None and length <= FLOW_WIDTH


def _represent_tagged(dumper: Dumper, data: Tagged):
    if isinstance(data.value, list):
        return dumper.represent_sequence(data.tag, data.value, flow_style=_flow(data.value))
    return dumper.represent_scalar(data.tag, data.value)


def _represent_list(dumper: Dumper, data: list):
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=_flow(data))


def _represent_dict(dumper: Dumper, data: dict):
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=_flow(data))


Dumper.add_representer(Tagged, _represent_tagged)
Dumper.add_representer(list, _represent_list)
Dumper.add_representer(dict, _represent_dict)


# --- the functions' declarations -----------------------------------------------------------------
def pascal(name: str) -> str:
    """`fan-out` → `FanOut`: the template's resource prefix (shared/aws config::output_name)."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("-"))


@dataclass(frozen=True)
class Function:
    dir: str  # functions/<dir>; the crate is reanimate-fn-<dir>
    bin: str  # its [[bin]]: cargo-lambda writes <target>/lambda/<bin>/bootstrap
    name: str  # CloudFormation prefix: PascalCase of the atom type (of the directory for the others)
    kind: str  # atom | sweeper | web
    atom: str | None  # None for the sweeper and the web crate
    profile: dict | None
    sends_to: tuple[str, ...]
    uses: tuple[str, ...]


class DeclarationError(Exception):
    pass


def _load(cargo: pathlib.Path) -> Function:
    where = cargo.relative_to(ROOT)
    data = tomllib.loads(cargo.read_text())
    package = data.get("package", {})
    directory = cargo.parent.name
    if package.get("name") != f"reanimate-fn-{directory}":
        # The Makefile builds the crates by this name, derived from the directory.
        raise DeclarationError(f"{where}: the package must be named reanimate-fn-{directory}")
    bins = data.get("bin", [])
    if len(bins) != 1 or "name" not in bins[0]:
        raise DeclarationError(f"{where}: needs exactly one [[bin]] with a name (the Lambda's bootstrap)")
    meta = package.get("metadata", {}).get("reanimate")
    if meta is None:
        raise DeclarationError(f"{where}: has no [package.metadata.reanimate] table (see infra/render.py)")
    known = {"atom", "sweeper", "web", "profile", "sends_to", "uses"}
    if unknown := sorted(set(meta) - known):
        raise DeclarationError(f"{where}: unknown keys in [package.metadata.reanimate]: {', '.join(unknown)}")
    if meta.get("sweeper") is True:
        if set(meta) != {"sweeper"}:
            raise DeclarationError(f"{where}: the sweeper declares only `sweeper = true` (it sends what any atom sends)")
        return Function(directory, bins[0]["name"], pascal(directory), "sweeper", None, None, (), ())
    if meta.get("web") is True:
        if set(meta) != {"web"}:
            raise DeclarationError(f"{where}: the web crate declares only `web = true` (its needs are fixed: web_resources)")
        return Function(directory, bins[0]["name"], pascal(directory), "web", None, None, (), ())
    atom = meta.get("atom")
    if not isinstance(atom, str) or not atom:
        raise DeclarationError(f"{where}: declare `atom = \"<type>\"` (or `sweeper = true`, `web = true`)")
    profile = meta.get("profile")
    if profile not in PROFILES:
        raise DeclarationError(f"{where}: profile must be one of {', '.join(PROFILES)}, not {profile!r}")
    sends_to = meta.get("sends_to", [])
    uses = meta.get("uses", [])
    if not all(isinstance(s, str) for s in sends_to) or not all(isinstance(u, str) for u in uses):
        raise DeclarationError(f"{where}: sends_to and uses are lists of strings")
    if atom not in sends_to:
        # Timers due within MaxQueueDelaySeconds, continuations and activity calls come back to
        # the atom's own queue.
        raise DeclarationError(f"{where}: sends_to must include the atom's own queue ({atom!r})")
    if unknown := sorted(set(uses) - set(USES)):
        raise DeclarationError(f"{where}: unknown uses {', '.join(unknown)} (known: {', '.join(USES)})")
    return Function(directory, bins[0]["name"], pascal(atom), "atom", atom, PROFILES[profile], tuple(sends_to), tuple(uses))


def load_functions() -> list[Function]:
    functions = [_load(cargo) for cargo in sorted(ROOT.glob("functions/*/Cargo.toml"))]
    atoms = [f.atom for f in functions if f.atom]
    for f in functions:
        if unknown := sorted(set(f.sends_to) - set(atoms)):
            raise DeclarationError(f"functions/{f.dir}/Cargo.toml: sends_to names no deployed atom: {', '.join(unknown)}")
    if len(set(atoms)) != len(atoms):
        raise DeclarationError("two crates under functions/ declare the same atom")
    for kind in ("sweeper", "web"):
        if sum(f.kind == kind for f in functions) != 1:
            raise DeclarationError(f"exactly one crate under functions/ must declare `{kind} = true`")
    if NOTIFY in atoms:
        # The notify queue's outputs would collide with the atom's (and dead-letters would list both).
        raise DeclarationError(f"no atom may be named {NOTIFY!r}: the notifier's queue has that name")
    return functions


# --- IAM statements -------------------------------------------------------------------------------
def allow(actions, resource, condition=None) -> dict:
    statement = {"Effect": "Allow", "Action": actions, "Resource": resource}
    if condition:
        statement["Condition"] = condition
    return statement


USER_SECRETS = arn("secretsmanager", "secret:reanimate/${AWS::StackName}/*")


def saving_steps() -> list:
    """What saving a step (or sending its outbox, as the sweeper does) writes beyond the record:
    the instance's history entries, and the notifications of requests that name a person."""
    return [
        allow(["dynamodb:PutItem", "dynamodb:BatchWriteItem"], get_att("HistoryTable", "Arn")),
        allow("sqs:SendMessage", get_att(f"{pascal(NOTIFY)}Queue", "Arn")),
    ]


def model_statements() -> list:
    """Atoms that ask a model: Bedrock (when ModelProvider is bedrock), only the configured models,
    or the API key in Secrets Manager (when it is openai-compatible with a key)."""
    models = [ref("ModelName"), if_("HasStrongModelName", ref("StrongModelName"), ref("ModelName"))]
    profile_arn = "arn:${AWS::Partition}:bedrock:${AWS::Region}:${AWS::AccountId}:inference-profile/${Model}"
    direct = []
    for model in models:
        direct.append(sub("arn:${AWS::Partition}:bedrock:${AWS::Region}::foundation-model/${Model}", {"Model": model}))
        direct.append(sub(profile_arn, {"Model": model}))
    # A cross-region inference profile invokes its foundation model in other regions: allowed
    # only through the configured profiles (AWS's documented condition for them).
    through_profile = allow(
        "bedrock:InvokeModel",
        sub("arn:${AWS::Partition}:bedrock:*::foundation-model/*"),
        {"StringEquals": {"bedrock:InferenceProfileArn": [sub(profile_arn, {"Model": m}) for m in models]}},
    )
    return [
        if_("UsesBedrock", allow("bedrock:InvokeModel", direct), NO_VALUE),
        if_("UsesBedrock", through_profile, NO_VALUE),
        allow(
            "secretsmanager:GetSecretValue",
            arn("secretsmanager", "secret:reanimate-config/${AWS::StackName}/model-api-key-*"),
        ),
    ]


# What a function may use beyond its queues, tables, timers and bus (`uses` in its declaration).
USES = {
    "models": model_statements,
    # Atoms that read mailboxes: users' Gmail refresh tokens, reanimate/STACK/INSTANCE/… (the
    # activities also check that a token belongs to the calling instance's user).
    "mail": lambda: [allow("secretsmanager:GetSecretValue", USER_SECRETS)],
    # The assistant deletes its user's secrets when the user disconnects.
    "mail-disconnect": lambda: [allow("secretsmanager:DeleteSecret", USER_SECRETS)],
    "digests": lambda: [
        allow("s3:PutObject", sub("${DigestBucket.Arn}/digests/*")),
        allow("ses:SendEmail", arn("ses", "identity/*")),
    ],
}


def role(service: str, policy_name: str, statements: list, source_account: bool = False) -> dict:
    trust = {"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}
    if source_account:
        trust["Condition"] = {"StringEquals": {"aws:SourceAccount": ref("AWS::AccountId")}}
    return {
        "Type": "AWS::IAM::Role",
        "Properties": {
            "AssumeRolePolicyDocument": {"Version": "2012-10-17", "Statement": [trust]},
            "Policies": [
                {"PolicyName": policy_name, "PolicyDocument": {"Version": "2012-10-17", "Statement": statements}}
            ],
        },
    }


def tls_only(action: str, resources) -> dict:
    """Refuses every request not made over TLS."""
    return {
        "Sid": "TlsOnly",
        "Effect": "Deny",
        "Principal": "*",
        "Action": action,
        "Resource": resources,
        "Condition": {"Bool": {"aws:SecureTransport": "false"}},
    }


def queue_arns(atoms) -> list:
    return [get_att(f"{pascal(a)}Queue", "Arn") for a in sorted(atoms)]


def dead_letter_arns(names) -> list:
    """The dead-letter queues of these atoms (and of the notify queue, named like one)."""
    return [get_att(f"{pascal(n)}DeadLetters", "Arn") for n in names]


# Consuming a queue: its function's trigger, or an operator listing and redriving dead letters.
RECEIVE_ACTIONS = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes", "sqs:ChangeMessageVisibility"]


def alarm_actions():
    return if_("HasAlarmTopic", [ref("AlarmTopicArn")], NO_VALUE)


# --- the template -------------------------------------------------------------------------------
DESCRIPTION = (
    "reanimate: one Lambda per atom, each fed by its own SQS queue (with a dead-letter queue), state "
    "in DynamoDB, timers in EventBridge Scheduler, lifecycle events on an EventBridge bus, digests in "
    "S3. The same template deploys to LocalStack (make integ, make demo) and to AWS (README.md). "
    "Rendered by infra/render.py from functions/*/Cargo.toml; edit those, not this file."
)


def parameters(functions) -> dict:
    params = {"CodeBucket": {"Type": "String", "Description": "S3 bucket holding the functions' zipped bootstrap binaries."}}
    for f in functions:
        params[f"{f.name}CodeKey"] = {"Type": "String", "Description": f"S3 key of the {f.dir} function's zip."}
    params.update({
        "Architecture": {"Type": "String", "Default": "x86_64", "AllowedValues": ["x86_64", "arm64"]},
        "MaxQueueDelaySeconds": {
            "Type": "Number", "Default": 900, "MinValue": 0, "MaxValue": 900,
            "Description": "Timers due within this many seconds use an SQS delay; later ones a Scheduler schedule.",
        },
        "History": {
            "Type": "String", "Default": "full", "AllowedValues": ["full", "off"],
            "Description": "full: every transition in the history table (a write unit a step); off: none.",
        },
        "RetentionSeconds": {
            "Type": "Number", "Default": 2592000,
            "Description": "How long a finished instance is kept before DynamoDB's TTL deletes it (30 days).",
        },
        "DigestSender": {
            "Type": "String", "Default": "digests@reanimate.example",
            "Description": "The address digests are emailed from (an SES identity the deploy verifies).",
        },
        "MailRoot": {
            "Type": "String", "Default": "/var/task/mail",
            "Description": "Folder under which Maildir mailboxes named in the assistant's auth answers live.",
        },
        "ModelProvider": {
            "Type": "String", "Default": "offline", "AllowedValues": ["offline", "bedrock", "openai-compatible"],
            "Description": "The language model the playbooks use (offline is a deterministic heuristic, not a language model).",
        },
        "ModelUrl": {
            "Type": "String", "Default": "",
            "Description": "For openai-compatible, the API root (https://api.openai.com/v1, http://host:11434/v1 for Ollama).",
        },
        "ModelName": {
            "Type": "String", "Default": "",
            "Description": "For bedrock and openai-compatible, the everyday model (a Bedrock model or inference profile id; "
            "the roles may invoke only it and StrongModelName).",
        },
        "StrongModelName": {
            "Type": "String", "Default": "",
            "Description": "For bedrock and openai-compatible, the stronger model the planner and careful summaries use (default ModelName).",
        },
        "ModelApiKey": {
            "Type": "String", "Default": "", "NoEcho": True,
            "Description": "For openai-compatible, the API key, if the endpoint needs one. Kept in Secrets Manager "
            "(reanimate-config/STACK/model-api-key, outside the users' reanimate/STACK/), readable only by the "
            "roles of atoms that call models.",
        },
        "GmailClientId": {
            "Type": "String", "Default": "",
            "Description": "The Google OAuth client id (an installed app) Gmail refresh tokens were issued to.",
        },
        "GmailClientSecret": {
            "Type": "String", "Default": "", "NoEcho": True,
            "Description": "That client's secret (not confidential for installed apps, but kept out of logs).",
        },
        "GmailTokenUrl": {"Type": "String", "Default": "https://oauth2.googleapis.com/token"},
        "GmailAuthorizeUrl": {
            "Type": "String", "Default": "https://accounts.google.com/o/oauth2/v2/auth",
            "Description": "Where the web inbox sends a person to grant Gmail access (Google's OAuth consent page).",
        },
        "GmailApiUrl": {"Type": "String", "Default": "https://gmail.googleapis.com"},
        "AlarmTopicArn": {
            "Type": "String", "Default": "",
            "Description": "An SNS topic the dead-letter alarms notify (none if empty).",
        },
    })
    return params


CONDITIONS = {
    "HasAlarmTopic": Tagged("!Not", [Tagged("!Equals", [ref("AlarmTopicArn"), ""])]),
    "HasModelApiKey": Tagged("!Not", [Tagged("!Equals", [ref("ModelApiKey"), ""])]),
    "HasStrongModelName": Tagged("!Not", [Tagged("!Equals", [ref("StrongModelName"), ""])]),
    "UsesBedrock": Tagged("!Equals", [ref("ModelProvider"), "bedrock"]),
}


# How to reach the language model: not given to the web crate's functions, which call none (their
# roles may not read the model key) and whose environments are the largest (check_environments).
MODEL_VARIABLES = (
    "REANIMATE_MODEL", "REANIMATE_MODEL_URL", "REANIMATE_MODEL_NAME", "REANIMATE_STRONG_MODEL_NAME",
    "REANIMATE_MODEL_API_KEY_SECRET",
)


def environment(atoms: list[Function]) -> dict:
    """The configuration every function reads (REANIMATE_* in shared/aws/src/config.rs)."""
    return {
        "AWS_LAMBDA_LOG_FORMAT": "JSON",
        "REANIMATE_STACK_NAME": ref("AWS::StackName"),
        "REANIMATE_INSTANCES_TABLE": ref("InstancesTable"),
        "REANIMATE_INBOX_TABLE": ref("InboxTable"),
        "REANIMATE_HISTORY_TABLE": ref("HistoryTable"),
        "REANIMATE_NOTIFY_QUEUE_URL": ref(f"{pascal(NOTIFY)}Queue"),
        "REANIMATE_SCHEDULE_GROUP": ref("TimerGroup"),
        "REANIMATE_SCHEDULER_ROLE_ARN": get_att("SchedulerRole", "Arn"),
        "REANIMATE_EVENT_BUS": ref("EventBus"),
        "REANIMATE_MAX_QUEUE_DELAY_SECS": ref("MaxQueueDelaySeconds"),
        "REANIMATE_RETENTION_SECS": ref("RetentionSeconds"),
        "REANIMATE_HISTORY": ref("History"),
        "REANIMATE_DIGEST_BUCKET": ref("DigestBucket"),
        "REANIMATE_DIGEST_FROM": ref("DigestSender"),
        "REANIMATE_MAIL_ROOT": ref("MailRoot"),
        "REANIMATE_MODEL": ref("ModelProvider"),
        "REANIMATE_MODEL_URL": ref("ModelUrl"),
        "REANIMATE_MODEL_NAME": ref("ModelName"),
        "REANIMATE_STRONG_MODEL_NAME": ref("StrongModelName"),
        "REANIMATE_MODEL_API_KEY_SECRET": if_("HasModelApiKey", ref("ModelApiKeySecret"), ""),
        "REANIMATE_GMAIL_API": ref("GmailApiUrl"),
        "REANIMATE_GMAIL_TOKEN_URL": ref("GmailTokenUrl"),
        "REANIMATE_GMAIL_CLIENT_ID": ref("GmailClientId"),
        "REANIMATE_GMAIL_CLIENT_SECRET": ref("GmailClientSecret"),
        "REANIMATE_ROUTES": routes(atoms),
    }


def routes(atoms: list[Function]) -> Tagged:
    """atom type → its queue's URL and ARN, as JSON (config::Route in shared/aws)."""
    entries = {a.atom: {"url": f"${{{a.name}Queue}}", "arn": f"${{{a.name}Queue.Arn}}"} for a in atoms}
    return sub(json.dumps(entries, separators=(", ", ": ")))


def index(name: str, hash_key: str, range_key: str, projection: dict) -> dict:
    """A global secondary index."""
    return {
        "IndexName": name,
        "KeySchema": [
            {"AttributeName": hash_key, "KeyType": "HASH"},
            {"AttributeName": range_key, "KeyType": "RANGE"},
        ],
        "Projection": projection,
    }


def table(attributes: dict, indexes: list, ttl: str | None = None, key: tuple[str, ...] = ("id",)) -> dict:
    """A table keyed by `key` (its hash key, then its range key if any), billed per request."""
    properties = {
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [{"AttributeName": n, "AttributeType": t} for n, t in attributes.items()],
        "KeySchema": [{"AttributeName": k, "KeyType": t} for k, t in zip(key, ("HASH", "RANGE"))],
        "GlobalSecondaryIndexes": indexes,
        # Encrypted with the AWS managed key (aws/dynamodb), stated rather than left to the default.
        "SSESpecification": {"SSEEnabled": True, "SSEType": "KMS"},
        "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True},
    }
    if not indexes:
        del properties["GlobalSecondaryIndexes"]
    if ttl:
        properties["TimeToLiveSpecification"] = {"AttributeName": ttl, "Enabled": True}
    # Deleting or replacing the stack keeps the table (its name is generated, so a new stack never
    # collides with a kept one).
    return {"Type": "AWS::DynamoDB::Table", "DeletionPolicy": "Retain", "UpdateReplacePolicy": "Retain", "Properties": properties}


def shared_resources(atoms: list[Function]) -> dict:
    all_atoms = [a.atom for a in atoms]
    return {
        "ModelApiKeySecret": {
            "Type": "AWS::SecretsManager::Secret",
            "Condition": "HasModelApiKey",
            "Properties": {"Name": sub("reanimate-config/${AWS::StackName}/model-api-key"), "SecretString": ref("ModelApiKey")},
        },
        "InstancesTable": table(
            {"id": "S", "outbox_pending": "S", "outbox_pending_since": "N"},
            # Sparse: only records whose outbox could not be sent carry its keys; the sweeper queries it.
            [index("by-pending-outbox", "outbox_pending", "outbox_pending_since",
                   {"ProjectionType": "INCLUDE", "NonKeyAttributes": ["version"]})],
            ttl="expires_at",
        ),
        "InboxTable": table(
            {"id": "S", "status": "S", "created_at": "N"},
            [index("by-status", "status", "created_at", {"ProjectionType": "ALL"})],
        ),
        # Every instance's full history, an item per version (shared/aws history.rs), written with
        # the step's outbox; each entry expires 365 days after it was written (TTL).
        "HistoryTable": table(
            {"instance": "S", "version": "N"}, [], ttl="expires_at", key=("instance", "version")
        ),
        "DigestBucket": {
            "Type": "AWS::S3::Bucket",
            "Properties": {
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [{"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]
                },
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True,
                },
            },
        },
        "DigestBucketPolicy": {
            "Type": "AWS::S3::BucketPolicy",
            "Properties": {
                "Bucket": ref("DigestBucket"),
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [tls_only("s3:*", [get_att("DigestBucket", "Arn"), sub("${DigestBucket.Arn}/*")])],
                },
            },
        },
        "EventBus": {"Type": "AWS::Events::EventBus", "Properties": {"Name": sub("${AWS::StackName}-events")}},
        "TimerGroup": {"Type": "AWS::Scheduler::ScheduleGroup", "Properties": {"Name": sub("${AWS::StackName}-timers")}},
        # Assumed by EventBridge Scheduler to deliver long timers, which go to the atom's own queue.
        "SchedulerRole": role(
            "scheduler.amazonaws.com",
            "send-to-atom-queues",
            [allow("sqs:SendMessage", queue_arns(all_atoms))],
            source_account=True,
        ),
        # For people and programs outside the stack (the reanimate CLI, a web inbox): start, signal,
        # cancel and answer; read instances; operate the dead-letter queues.
        "ClientRole": {
            "Type": "AWS::IAM::Role",
            "Properties": {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [{
                        "Effect": "Allow",
                        "Principal": {"AWS": arn("iam", "root", region=False)},
                        "Action": "sts:AssumeRole",
                    }],
                },
                "Policies": [{
                    "PolicyName": "reanimate-client",
                    "PolicyDocument": {
                        "Version": "2012-10-17",
                        "Statement": [
                            # The notify queue too: the CLI redrives its dead letters like an atom's.
                            allow("sqs:SendMessage", [*queue_arns(all_atoms), get_att(f"{pascal(NOTIFY)}Queue", "Arn")]),
                            allow(RECEIVE_ACTIONS, dead_letter_arns([*all_atoms, NOTIFY])),
                            allow(["dynamodb:GetItem", "dynamodb:Scan"], get_att("InstancesTable", "Arn")),
                            allow("dynamodb:Query", get_att("HistoryTable", "Arn")),
                            allow(
                                ["dynamodb:GetItem", "dynamodb:UpdateItem", "dynamodb:Query"],
                                [get_att("InboxTable", "Arn"), sub("${InboxTable.Arn}/index/by-status")],
                            ),
                            allow(
                                ["secretsmanager:CreateSecret", "secretsmanager:PutSecretValue", "secretsmanager:DescribeSecret"],
                                USER_SECRETS,
                            ),
                            allow(["s3:GetObject", "s3:ListBucket"], [get_att("DigestBucket", "Arn"), sub("${DigestBucket.Arn}/digests/*")]),
                            # `reanimate console` signs an operator's sign-in link; `reanimate inbox
                            # link` a person's link to their request (an operator may answer anyway).
                            allow("secretsmanager:GetSecretValue", [ref("OperatorKey"), ref("InboxLinkKey")]),
                        ],
                    },
                }],
            },
        },
    }


def timers_and_events() -> list:
    return [
        allow(
            ["scheduler:CreateSchedule", "scheduler:DeleteSchedule"],
            arn("scheduler", "schedule/${TimerGroup}/*"),
        ),
        allow("iam:PassRole", get_att("SchedulerRole", "Arn")),
        allow("events:PutEvents", get_att("EventBus", "Arn")),
    ]


def log_group() -> dict:
    return {"Type": "AWS::Logs::LogGroup", "Properties": {"RetentionInDays": LOG_RETENTION_DAYS}}


def function(name: str, timeout: int, env: dict, code: str | None = None) -> dict:
    """A function whose zip is the `{code}CodeKey` parameter (its own by default)."""
    return {
        "Type": "AWS::Lambda::Function",
        "Properties": {
            "Runtime": "provided.al2023",
            "Handler": "bootstrap",
            "Architectures": [ref("Architecture")],
            "MemorySize": 256,
            "Timeout": timeout,
            "Role": get_att(f"{name}Role", "Arn"),
            "Code": {"S3Bucket": ref("CodeBucket"), "S3Key": ref(f"{code or name}CodeKey")},
            # Its own log group, with a retention; the role may write only there.
            "LoggingConfig": {"LogGroup": ref(f"{name}LogGroup")},
            "Environment": {"Variables": env},
        },
    }


def write_logs(name: str) -> dict:
    return allow(["logs:CreateLogStream", "logs:PutLogEvents"], get_att(f"{name}LogGroup", "Arn"))


def sweeper_resources(sweeper: Function, atoms: list[Function], env: dict) -> dict:
    name = sweeper.name
    # It sends what any atom saved in an outbox: the union of the atoms' graphs.
    sends = sorted({target for a in atoms for target in a.sends_to})
    return {
        f"{name}LogGroup": log_group(),
        # Sends the outboxes that could not be sent when their step was saved (records marked in
        # the by-pending-outbox index), every minute.
        f"{name}Role": role("lambda.amazonaws.com", "sweeper", [
            write_logs(name),
            allow(["dynamodb:GetItem", "dynamodb:UpdateItem"], get_att("InstancesTable", "Arn")),
            allow("dynamodb:Query", sub("${InstancesTable.Arn}/index/by-pending-outbox")),
            allow(["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"], get_att("InboxTable", "Arn")),
            allow("sqs:SendMessage", queue_arns(sends)),
            *saving_steps(),
            *timers_and_events(),
        ]),
        f"{name}Function": function(name, 55, env),
        # Assumed by EventBridge Scheduler to invoke the sweeper.
        f"{name}ScheduleRole": role(
            "scheduler.amazonaws.com",
            "invoke-sweeper",
            [allow("lambda:InvokeFunction", get_att(f"{name}Function", "Arn"))],
            source_account=True,
        ),
        # The sweeper fails an invocation when an outbox still cannot be sent: a failing outbox is
        # retried every RETRY_AFTER (5 min), so a stuck one fails the sweeper every 5-6 min; two
        # failed runs within 10 min go off, one transient failure does not.
        f"{name}FailingAlarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmDescription": "sweeper: outboxes that still cannot be sent (its log says which)",
                "Namespace": "AWS/Lambda",
                "MetricName": "Errors",
                "Dimensions": [{"Name": "FunctionName", "Value": ref(f"{name}Function")}],
                "Statistic": "Sum",
                "Period": 60,
                "EvaluationPeriods": 10,
                "DatapointsToAlarm": 2,
                "Threshold": 0,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                "AlarmActions": alarm_actions(),
            },
        },
        f"{name}Schedule": {
            "Type": "AWS::Scheduler::Schedule",
            "Properties": {
                "Description": "reanimate sweeper - sends outboxes that could not be sent",
                "ScheduleExpression": "rate(1 minute)",
                "FlexibleTimeWindow": {"Mode": "OFF"},
                "Target": {
                    "Arn": get_att(f"{name}Function", "Arn"),
                    "RoleArn": get_att(f"{name}ScheduleRole", "Arn"),
                    "Input": '{"sweep": true}',
                    "RetryPolicy": {"MaximumRetryAttempts": 0},
                },
            },
        },
    }


def queue_resources(n: str, label: str, visibility: int, senders: list[str]) -> dict:
    """A queue `{n}Queue` that only `senders` (roles) may send to, with its dead-letter queue
    `{n}DeadLetters` and an alarm on it; `label` is what `reanimate dead-letters` calls it."""
    return {
        f"{n}DeadLetters": {
            "Type": "AWS::SQS::Queue",
            "Properties": {"MessageRetentionPeriod": 1209600, "SqsManagedSseEnabled": True},
        },
        f"{n}DeadLettersPolicy": {
            "Type": "AWS::SQS::QueuePolicy",
            "Properties": {
                "Queues": [ref(f"{n}DeadLetters")],
                "PolicyDocument": {"Version": "2012-10-17", "Statement": [tls_only("sqs:*", get_att(f"{n}DeadLetters", "Arn"))]},
            },
        },
        f"{n}DeadLettersAlarm": {
            "Type": "AWS::CloudWatch::Alarm",
            "Properties": {
                "AlarmDescription": f"{label}: messages in the dead-letter queue (reanimate dead-letters list {label})",
                "Namespace": "AWS/SQS",
                "MetricName": "ApproximateNumberOfMessagesVisible",
                "Dimensions": [{"Name": "QueueName", "Value": get_att(f"{n}DeadLetters", "QueueName")}],
                "Statistic": "Maximum",
                "Period": 60,
                "EvaluationPeriods": 1,
                "Threshold": 0,
                "ComparisonOperator": "GreaterThanThreshold",
                "TreatMissingData": "notBreaching",
                "AlarmActions": alarm_actions(),
            },
        },
        f"{n}Queue": {
            "Type": "AWS::SQS::Queue",
            "Properties": {
                "VisibilityTimeout": visibility,
                "SqsManagedSseEnabled": True,
                "RedrivePolicy": {"deadLetterTargetArn": get_att(f"{n}DeadLetters", "Arn"), "maxReceiveCount": 5},
            },
        },
        f"{n}QueuePolicy": {
            "Type": "AWS::SQS::QueuePolicy",
            "Properties": {
                "Queues": [ref(f"{n}Queue")],
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "OnlyTheStackSends",
                            "Effect": "Deny",
                            "Principal": "*",
                            "Action": "sqs:SendMessage",
                            "Resource": get_att(f"{n}Queue", "Arn"),
                            "Condition": {"ArnNotEquals": {"aws:PrincipalArn": [get_att(r, "Arn") for r in senders]}},
                        },
                        tls_only("sqs:*", get_att(f"{n}Queue", "Arn")),
                    ],
                },
            },
        },
    }


def trigger(n: str, p: dict) -> dict:
    return {
        "Type": "AWS::Lambda::EventSourceMapping",
        "Properties": {
            "EventSourceArn": get_att(f"{n}Queue", "Arn"),
            "FunctionName": ref(f"{n}Function"),
            "BatchSize": p["batch"],
            "MaximumBatchingWindowInSeconds": p["window"],
            "ScalingConfig": {"MaximumConcurrency": p["concurrency"]},
            "FunctionResponseTypes": ["ReportBatchItemFailures"],
        },
    }


def atom_resources(a: Function, functions: list[Function], sweeper: Function, web: Function, env: dict) -> dict:
    n, p = a.name, a.profile
    # Who may send to this queue: the functions whose graph reaches it, the sweeper (it sends what
    # they saved), the web inbox (answers, signals, cancels, redriven dead letters), the Scheduler
    # role (long timers) and the client role.
    senders = [f"{f.name}Role" for f in functions if a.atom in f.sends_to]
    senders += [f"{sweeper.name}Role", f"{web.name}Role", "SchedulerRole", "ClientRole"]
    statements = [
        write_logs(n),
        allow(["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem"], get_att("InstancesTable", "Arn")),
        allow(
            ["dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:Query"],
            [get_att("InboxTable", "Arn"), sub("${InboxTable.Arn}/index/by-status")],
        ),
        allow(RECEIVE_ACTIONS, get_att(f"{n}Queue", "Arn")),
        allow("sqs:SendMessage", [get_att(f"{n}DeadLetters", "Arn"), *queue_arns(a.sends_to)]),
        *saving_steps(),
        *timers_and_events(),
    ]
    for use in a.uses:
        statements += USES[use]()
    return {
        **queue_resources(n, a.atom, p["visibility"], senders),
        f"{n}LogGroup": log_group(),
        f"{n}Role": role("lambda.amazonaws.com", f"{a.atom}-atom", statements),
        # REANIMATE_USES: the function builds only the clients its declaration lets it use.
        f"{n}Function": function(
            n,
            p["timeout"],
            {"REANIMATE_DEAD_LETTER_URL": ref(f"{n}DeadLetters"), "REANIMATE_USES": ",".join(a.uses), **env},
        ),
        f"{n}Trigger": trigger(n, p),
    }


def secret(description: str) -> dict:
    """A random key the stack generates (its name generated too); only the stack's roles read it."""
    return {
        "Type": "AWS::SecretsManager::Secret",
        "Properties": {
            "Description": description,
            "GenerateSecretString": {"PasswordLength": 64, "ExcludePunctuation": True},
        },
    }


def web_resources(web: Function, atoms: list[Function], sweeper: Function, env: dict) -> dict:
    """The web crate's two functions, one bootstrap told apart by the event (and REANIMATE_FUNCTION):
    the inbox and console behind a public function URL, and the notifier on the notify queue."""
    w, q = web.name, pascal(NOTIFY)
    all_atoms = [a.atom for a in atoms]
    env = {k: v for k, v in env.items() if k not in MODEL_VARIABLES}
    inbox = [
        write_logs(w),
        # Instances, their histories and the requests, for the people they are for and operators.
        allow(
            ["dynamodb:GetItem", "dynamodb:Query", "dynamodb:Scan"],
            [
                get_att("InstancesTable", "Arn"),
                sub("${InstancesTable.Arn}/index/by-pending-outbox"),
                get_att("InboxTable", "Arn"),
                sub("${InboxTable.Arn}/index/by-status"),
                get_att("HistoryTable", "Arn"),
            ],
        ),
        # Recording an answer on its request.
        allow(["dynamodb:GetItem", "dynamodb:UpdateItem"], get_att("InboxTable", "Arn")),
        # Answers, signals, cancels and redriven dead letters go to the atom's queue (the notify
        # queue's dead letters back to it).
        allow("sqs:SendMessage", [*queue_arns(all_atoms), get_att(f"{q}Queue", "Arn")]),
        allow(RECEIVE_ACTIONS, dead_letter_arns([*all_atoms, NOTIFY])),
        # Each queue's redrive policy names its dead-letter queue: read at start, so the
        # function's environment (4 KB at most) need not list them.
        allow("sqs:GetQueueAttributes", [*queue_arns(all_atoms), get_att(f"{q}Queue", "Arn")]),
        # The keys that sign people's links and operators' sessions.
        allow("secretsmanager:GetSecretValue", [ref("InboxLinkKey"), ref("OperatorKey")]),
        # writeOnly answer fields (a Gmail refresh token) are stored as the users' secrets.
        allow(
            ["secretsmanager:CreateSecret", "secretsmanager:PutSecretValue", "secretsmanager:DescribeSecret", "secretsmanager:TagResource"],
            USER_SECRETS,
        ),
        # A person reads their digests.
        allow("s3:GetObject", sub("${DigestBucket.Arn}/digests/*")),
        allow("s3:ListBucket", get_att("DigestBucket", "Arn"), {"StringLike": {"s3:prefix": "digests/*"}}),
    ]
    notifier = [
        write_logs(q),
        allow(RECEIVE_ACTIONS, get_att(f"{q}Queue", "Arn")),
        # Refused records are parked in the dead-letter queue with the reason, as the atoms' are.
        allow("sqs:SendMessage", get_att(f"{q}DeadLetters", "Arn")),
        # It reads the request and its instance, and marks the request notified.
        allow(["dynamodb:GetItem", "dynamodb:UpdateItem"], get_att("InboxTable", "Arn")),
        allow("dynamodb:GetItem", get_att("InstancesTable", "Arn")),
        allow("secretsmanager:GetSecretValue", ref("InboxLinkKey")),
        allow("ses:SendEmail", arn("ses", "identity/*")),
    ]
    # Who may announce a request: every atom (any step may open one), the sweeper (it sends what
    # they saved), the inbox (redriven dead letters) and the client role (the CLI's redrive).
    announcers = [f"{a.name}Role" for a in atoms] + [f"{sweeper.name}Role", f"{w}Role", "ClientRole"]
    return {
        "InboxLinkKey": secret(
            "reanimate: signs the web inbox's user links (a capability link to one request for one person)"
        ),
        "OperatorKey": secret("reanimate: signs the web inbox's operator console sessions"),
        f"{w}LogGroup": log_group(),
        f"{w}Role": role("lambda.amazonaws.com", "web-inbox", inbox),
        f"{w}Function": function(w, 30, {
            "REANIMATE_FUNCTION": "web",
            "REANIMATE_LINK_KEY_SECRET": ref("InboxLinkKey"),
            "REANIMATE_OPERATOR_KEY_SECRET": ref("OperatorKey"),
            "REANIMATE_OAUTH_AUTHORIZE_URL": ref("GmailAuthorizeUrl"),
            **env,
        }),
        # Public: the app authenticates every request itself (signed capability links for end
        # users, signed operator sessions for the console).
        f"{w}Url": {
            "Type": "AWS::Lambda::Url",
            "Properties": {"AuthType": "NONE", "TargetFunctionArn": get_att(f"{w}Function", "Arn")},
        },
        f"{w}UrlPermission": {
            "Type": "AWS::Lambda::Permission",
            "Properties": {
                "Action": "lambda:InvokeFunctionUrl",
                "FunctionName": ref(f"{w}Function"),
                "Principal": "*",
                "FunctionUrlAuthType": "NONE",
            },
        },
        # Since October 2025 a new function URL also needs lambda:InvokeFunction, granted only
        # through the URL. The cfn-lint here predates the property (LocalStack ignores it).
        f"{w}UrlInvokePermission": {
            "Type": "AWS::Lambda::Permission",
            "Metadata": {"cfn-lint": {"config": {"ignore_checks": ["E3002"]}}},
            "Properties": {
                "Action": "lambda:InvokeFunction",
                "FunctionName": ref(f"{w}Function"),
                "Principal": "*",
                "InvokedViaFunctionUrl": True,
            },
        },
        **queue_resources(q, NOTIFY, NOTIFY_PROFILE["visibility"], announcers),
        f"{q}LogGroup": log_group(),
        f"{q}Role": role("lambda.amazonaws.com", "notifier", notifier),
        # The same zip as the inbox. REANIMATE_DEAD_LETTER_URL: refused records are parked there,
        # as the atoms' are.
        f"{q}Function": function(q, NOTIFY_PROFILE["timeout"], {
            "REANIMATE_FUNCTION": NOTIFY,
            "REANIMATE_DEAD_LETTER_URL": ref(f"{q}DeadLetters"),
            "REANIMATE_LINK_KEY_SECRET": ref("InboxLinkKey"),
            "REANIMATE_INBOX_URL": get_att(f"{w}Url", "FunctionUrl"),
            **env,
        }, code=w),
        f"{q}Trigger": trigger(q, NOTIFY_PROFILE),
    }


def outputs(atoms: list[Function], sweeper: Function, web: Function) -> dict:
    out = {
        "StackName": ref("AWS::StackName"),
        "InstancesTable": ref("InstancesTable"),
        "InboxTable": ref("InboxTable"),
        "HistoryTable": ref("HistoryTable"),
        "History": ref("History"),
        "DigestBucket": ref("DigestBucket"),
        "DigestSender": ref("DigestSender"),
        "EventBus": ref("EventBus"),
        "TimerGroup": ref("TimerGroup"),
        "SchedulerRoleArn": get_att("SchedulerRole", "Arn"),
        "ClientRoleArn": get_att("ClientRole", "Arn"),
        "SweeperFunctionName": ref(f"{sweeper.name}Function"),
        "InboxUrl": get_att(f"{web.name}Url", "FunctionUrl"),
        # Where the signing keys are (their ARNs, not their values).
        "InboxLinkKeySecret": ref("InboxLinkKey"),
        "OperatorKeySecret": ref("OperatorKey"),
        # Every atom's queue, as REANIMATE_ROUTES gives it to the functions: clients need no list.
        "Routes": routes(atoms),
    }
    for a in atoms:
        out[f"{a.name}QueueUrl"] = ref(f"{a.name}Queue")
        out[f"{a.name}QueueArn"] = get_att(f"{a.name}Queue", "Arn")
        out[f"{a.name}DeadLettersUrl"] = ref(f"{a.name}DeadLetters")
        out[f"{a.name}FunctionName"] = ref(f"{a.name}Function")
    # Named like an atom's, so that dead_letters::queues (shared/aws) lists it as "notify".
    out[f"{pascal(NOTIFY)}QueueUrl"] = ref(f"{pascal(NOTIFY)}Queue")
    out[f"{pascal(NOTIFY)}DeadLettersUrl"] = ref(f"{pascal(NOTIFY)}DeadLetters")
    return {key: {"Value": value} for key, value in out.items()}


def template(functions: list[Function]) -> dict:
    atoms = [f for f in functions if f.kind == "atom"]
    (sweeper,) = [f for f in functions if f.kind == "sweeper"]
    (web,) = [f for f in functions if f.kind == "web"]
    env = environment(atoms)
    resources = shared_resources(atoms)
    resources.update(sweeper_resources(sweeper, atoms, env))
    for a in atoms:
        resources.update(atom_resources(a, functions, sweeper, web, env))
    resources.update(web_resources(web, atoms, sweeper, env))
    return {
        "AWSTemplateFormatVersion": "2010-09-09",
        "Description": DESCRIPTION,
        "Parameters": parameters(functions),
        "Conditions": CONDITIONS,
        "Resources": resources,
        "Outputs": outputs(atoms, sweeper, web),
    }


# --- Lambda's 4 KB of environment ------------------------------------------------------------------
# Lambda refuses a function whose environment variables, written as JSON, exceed 4 KB (LocalStack
# measures json.dumps(variables, separators=(",", ":")), escapes included). Values are resolved at
# deploy time, so each reference is estimated from the shape of what it names: a stack name of
# ENV_STACK_NAME characters (deploy.py's default, reanimate, has 9), the commercial partition, the
# longest region, generated names untruncated, free-form parameters (model ids, the Gmail client)
# of ENV_PARAMETER characters each, or their default if longer. A deploy within those bounds fits
# if the estimate does. Every function carries REANIMATE_ROUTES (about 2.3 KB for ten atoms):
# the atoms are within ~140 bytes of the limit here, and each further atom costs every function ~230.
ENV_LIMIT = 4096
ENV_STACK_NAME = 12
ENV_PARAMETER = 32
PSEUDO = {"AWS::StackName": ENV_STACK_NAME, "AWS::Region": 14, "AWS::AccountId": 12, "AWS::Partition": 3, "AWS::URLSuffix": 13}
# Functions known to be over the limit, with why and what would fix it: reported on every render
# rather than refused, so the rest of the template keeps rendering until the fix lands.
ENV_OVER_LIMIT: dict[str, str] = {}


class EnvironmentTooLarge(Exception):
    pass


def _generated_name(logical: str) -> int:
    """A name CloudFormation generates: STACK-Logical-RANDOM13."""
    return ENV_STACK_NAME + 1 + len(logical) + 1 + 13


def _arn(service: str, resource: int, region: bool = True) -> int:
    return len(f"arn::{service}::{'x' * 12}:") + PSEUDO["AWS::Partition"] + (PSEUDO["AWS::Region"] if region else 0) + resource


def _reference_size(name: str, template: dict) -> int:
    """The estimated length of what `!Ref name` or `!GetAtt name` (`Resource.Attribute`) resolves to."""
    if name in PSEUDO:
        return PSEUDO[name]
    if name in template["Parameters"]:
        p = template["Parameters"][name]
        if p["Type"] == "Number":
            return 10
        if "AllowedValues" in p:
            return max(len(v) for v in p["AllowedValues"])
        return max(len(str(p.get("Default", ""))), ENV_PARAMETER)
    logical, _, attribute = name.partition(".")
    resource = template["Resources"][logical]
    kind = resource["Type"]
    if kind == "AWS::SQS::Queue":
        if attribute == "Arn":
            return _arn("sqs", _generated_name(logical))
        url = len("https://sqs..amazonaws.com//") + PSEUDO["AWS::Region"] + PSEUDO["AWS::AccountId"]
        return url + _generated_name(logical)
    if kind == "AWS::IAM::Role":
        return _arn("iam", len("role/") + _generated_name(logical), region=False)
    if kind == "AWS::SecretsManager::Secret":  # its Ref is its ARN, ending in -RANDOM6
        return _arn("secretsmanager", len("secret:") + _generated_name(logical) + 7)
    if kind == "AWS::Lambda::Url":  # https://ID32.lambda-url.REGION.on.aws/
        return len("https://.lambda-url..on.aws/") + 32 + PSEUDO["AWS::Region"]
    if attribute == "Arn":
        return _arn("x" * 16, 32 + _generated_name(logical))
    if "Name" in resource.get("Properties", {}):
        return _value_size(resource["Properties"]["Name"], template)
    return _generated_name(logical)


def _value_size(value, template: dict) -> int:
    """The estimated length of `value` as a JSON string, without its quotes."""
    if isinstance(value, (bool, int)):
        return len(str(value))
    if isinstance(value, str):
        return len(json.dumps(value)) - 2
    if value.tag in ("!Ref", "!GetAtt"):
        return _reference_size(value.value, template)
    if value.tag == "!If":
        return max(_value_size(value.value[1], template), _value_size(value.value[2], template))
    if value.tag == "!Sub":
        text, variables = (value.value, {}) if isinstance(value.value, str) else value.value
        size = 0
        for name in re.findall(r"\$\{([^}!][^}]*)\}", text):
            size += _value_size(variables[name], template) if name in variables else _reference_size(name, template)
        return size + _value_size(re.sub(r"\$\{[^}!][^}]*\}", "", text), template)
    raise ValueError(f"cannot estimate the length of {value.tag}")


def environment_size(variables: dict, template: dict) -> tuple[int, dict]:
    """The estimated size of `variables` as Lambda measures it, and each variable's share."""
    shares = {k: len(json.dumps(k)) + 1 + 2 + _value_size(v, template) for k, v in variables.items()}
    return 2 + sum(shares.values()) + max(len(shares) - 1, 0), shares


def check_environments(template: dict) -> list[str]:
    """Fails (EnvironmentTooLarge) for a function over ENV_LIMIT; the warnings for ENV_OVER_LIMIT."""
    errors, warnings = [], []
    for logical, resource in template["Resources"].items():
        if resource["Type"] != "AWS::Lambda::Function":
            continue
        size, shares = environment_size(resource["Properties"]["Environment"]["Variables"], template)
        if size <= ENV_LIMIT:
            continue
        largest = ", ".join(f"{k} ~{n:,}" for k, n in sorted(shares.items(), key=lambda kv: -kv[1])[:3])
        problem = f"{logical}: its environment would take about {size:,} bytes, over Lambda's {ENV_LIMIT:,} (largest: {largest})"
        if logical in ENV_OVER_LIMIT:
            warnings.append(f"{problem}; it will not deploy: {ENV_OVER_LIMIT[logical]}")
        else:
            errors.append(problem)
    if errors:
        raise EnvironmentTooLarge("\n".join(errors))
    return warnings


HEADER = "# Rendered by infra/render.py from functions/*/Cargo.toml; edit those, not this file.\n"


def render(functions: list[Function] | None = None) -> str:
    """The template's text. Refuses a function whose environment would be over Lambda's limit
    (check_environments), and says so for the known ones."""
    data = template(functions if functions is not None else load_functions())
    for warning in check_environments(data):
        print(f"render: warning: {warning}", file=sys.stderr)
    body = yaml.dump(
        data,
        Dumper=Dumper,
        sort_keys=False,
        default_flow_style=False,
        width=120,
        allow_unicode=False,
    )
    return HEADER + body


def main() -> int:
    try:
        text = render()
    except (DeclarationError, EnvironmentTooLarge) as e:
        print(f"render: {e}", file=sys.stderr)
        return 1
    if "--check" in sys.argv:
        if TEMPLATE.read_text() != text:
            print("infra/template.yaml is stale: run python3 infra/render.py", file=sys.stderr)
            return 1
        return 0
    TEMPLATE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
