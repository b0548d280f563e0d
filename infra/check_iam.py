#!/usr/bin/env python3
"""Fails if a policy in a CloudFormation template grants more than it names.

    python3 infra/check_iam.py [TEMPLATE]   # default infra/template.yaml
    python3 infra/check_iam.py --self-test  # the check must catch what it is meant to catch

Every Allow statement in the template (roles' inline policies, managed policies, queue, bucket and
other resource policies, trust policies) is checked, through both branches of every Fn::If:
- no wildcard action (`*`, `service:*`, or any `*` in an action), and no NotAction;
- no NotResource, and no `Resource: "*"` (or an ARN whose resource part is `*`) for an action on a
  data service (DATA_SERVICES).
Deny statements may use wildcards: they are how the TLS-only and only-the-stack-sends guards are
written. A role's ManagedPolicyArns cannot be inspected here, so they are refused too.

Lambda permissions (AWS::Lambda::Permission, statements of a function's resource policy) are checked
too: no wildcard action, and none for any principal (`*`) except the two a public function URL needs
(lambda:InvokeFunctionUrl with FunctionUrlAuthType NONE, lambda:InvokeFunction only via the URL),
and only for a function listed in PUBLIC_URLS.

Exceptions are listed in EXCEPTIONS and PUBLIC_URLS, each with its reason."""

import pathlib
import re
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent

# Services holding or moving the stack's data (or able to read it out).
DATA_SERVICES = {"dynamodb", "sqs", "s3", "secretsmanager", "scheduler", "events", "ses", "bedrock", "logs", "kms", "sns"}

# (resource logical id, action) pairs allowed a wildcard resource, with why. None needed today;
# e.g. cloudwatch:PutMetricData (which has no resource-level permissions) would go here.
EXCEPTIONS: dict[tuple[str, str], str] = {}

# Functions anyone may invoke through their function URL (AuthType NONE), with why that is safe.
PUBLIC_URLS = {
    "InboxFunction": "the web inbox and operator console: the app authenticates every request itself "
    "(signed capability links for end users, signed sessions for operators)",
}


class Loader(yaml.SafeLoader):
    pass


def _intrinsic(loader: Loader, suffix: str, node: yaml.Node):
    """`!Ref X` → {"Ref": X}, `!GetAtt A.B` → {"Fn::GetAtt": [A, B]}, `!Sub …` → {"Fn::Sub": …}."""
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


Loader.add_multi_constructor("!", _intrinsic)


def branches(value):
    """The values `value` may take: both sides of each Fn::If, AWS::NoValue dropped."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        _, then, otherwise = value["Fn::If"]
        return branches(then) + branches(otherwise)
    if value == {"Ref": "AWS::NoValue"}:
        return []
    return [value]


def as_list(value) -> list:
    out = []
    for v in branches(value):
        if isinstance(v, list):
            for item in v:
                out += branches(item)
        else:
            out.append(v)
    return out


def policy_documents(node, path: str):
    """Every policy document under `node`: values of keys named *PolicyDocument."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key.endswith("PolicyDocument"):
                for doc in branches(value):
                    yield f"{path}.{key}", doc
            else:
                yield from policy_documents(value, f"{path}.{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from policy_documents(value, f"{path}[{i}]")


def text(value) -> str:
    """A resource or action as text: a plain string, or the template of an Fn::Sub."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    return ""  # Ref / GetAtt of a resource: a specific ARN


def wildcard_resource(resource: str) -> bool:
    if resource == "*":
        return True
    # arn:partition:service:region:account:resource, whose resource part is only "*" (the
    # ${AWS::…} variables of an Fn::Sub have colons of their own).
    parts = re.sub(r"\$\{[^}]*\}", "x", resource).split(":", 5)
    return len(parts) == 6 and parts[0] == "arn" and parts[5] in ("*", "")


def through_function_url(properties: dict) -> bool:
    """Whether a Lambda permission only opens the function's URL, unauthenticated (AuthType NONE)."""
    action = properties.get("Action")
    if action == "lambda:InvokeFunctionUrl":
        return properties.get("FunctionUrlAuthType") == "NONE"
    return action == "lambda:InvokeFunction" and properties.get("InvokedViaFunctionUrl") in (True, "true")


def permission_problems(logical: str, properties: dict) -> list[str]:
    """An AWS::Lambda::Permission: who may call the function, outside IAM policies."""
    found = []
    action = text(properties.get("Action"))
    if "*" in action:
        found.append(f"{logical}: wildcard action {action!r}")
    if properties.get("Principal") != "*":
        return found
    target = properties.get("FunctionName")
    function = target.get("Ref") if isinstance(target, dict) else target
    if not through_function_url(properties):
        found.append(f"{logical}: {action} for any principal ('*')")
    elif function not in PUBLIC_URLS:
        found.append(f"{logical}: a public function URL for {function!r}, which PUBLIC_URLS does not list")
    return found


def problems(template: dict) -> list[str]:
    found = []
    checked = 0
    for logical, resource in (template.get("Resources") or {}).items():
        properties = resource.get("Properties") or {}
        if resource.get("Type") == "AWS::Lambda::Permission":
            checked += 1
            found += permission_problems(logical, properties)
        if properties.get("ManagedPolicyArns"):
            found.append(f"{logical}: ManagedPolicyArns cannot be checked here; write the statements inline")
        for where, doc in policy_documents(properties, logical):
            for statement in as_list(doc.get("Statement")):
                checked += 1
                if statement.get("Effect") != "Allow":
                    continue
                if "NotAction" in statement:
                    found.append(f"{where}: an Allow with NotAction grants every other action")
                if "NotResource" in statement:
                    found.append(f"{where}: an Allow with NotResource grants every other resource")
                actions = [text(a) for a in as_list(statement.get("Action"))]
                for action in actions:
                    if "*" in action:
                        found.append(f"{where}: wildcard action {action!r}")
                for res in as_list(statement.get("Resource")):
                    if not wildcard_resource(text(res)):
                        continue
                    for action in actions:
                        service = action.split(":", 1)[0].lower()
                        if service in DATA_SERVICES and (logical, action) not in EXCEPTIONS:
                            found.append(f"{where}: {action} on wildcard resource {text(res)!r}")
    if checked == 0:
        found.append("no policy statement found: is this the template?")
    return found


def check(path: pathlib.Path) -> int:
    template = yaml.load(path.read_text(), Loader=Loader)
    found = problems(template)
    for problem in found:
        print(f"check_iam: {path.name}: {problem}", file=sys.stderr)
    if found:
        return 1
    print(f"check_iam: {path.name}: no wildcard action, no wildcard resource on a data service, no function open to anyone but through a listed URL")
    return 0


SELF_TEST = """
Resources:
  UrlPermission:
    Type: AWS::Lambda::Permission
    Properties: {Action: lambda:InvokeFunctionUrl, FunctionName: !Ref InboxFunction, Principal: "*", FunctionUrlAuthType: NONE}
  UrlInvokePermission:
    Type: AWS::Lambda::Permission
    Properties: {Action: lambda:InvokeFunction, FunctionName: !Ref InboxFunction, Principal: "*", InvokedViaFunctionUrl: true}
  Role:
    Type: AWS::IAM::Role
    Properties:
      Policies:
        - PolicyName: p
          PolicyDocument:
            Statement:
              - {Effect: Allow, Action: sqs:SendMessage, Resource: !GetAtt Queue.Arn}
              - {Effect: Deny, Action: "*", Resource: "*"}
              - {Effect: Allow, Action: xray:PutTraceSegments, Resource: "*"}
              - !If [Cond, {Effect: Allow, Action: "s3:*", Resource: !Sub "${Bucket.Arn}/*"}, !Ref AWS::NoValue]
              - Effect: Allow
                Action: [dynamodb:GetItem]
                Resource: !Sub "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:*"
  Policy:
    Type: AWS::SQS::QueuePolicy
    Properties:
      PolicyDocument:
        Statement:
          - {Effect: Allow, Principal: "*", Action: [sqs:SendMessage], Resource: "*"}
          - {Effect: Allow, NotAction: iam:PassRole, Resource: !GetAtt Queue.Arn}
  PublicInvoke:
    Type: AWS::Lambda::Permission
    Properties: {Action: lambda:InvokeFunction, FunctionName: !Ref InboxFunction, Principal: "*"}
  IamUrlForAnyone:
    Type: AWS::Lambda::Permission
    Properties: {Action: lambda:InvokeFunctionUrl, FunctionName: !Ref InboxFunction, Principal: "*", FunctionUrlAuthType: AWS_IAM}
  OtherPublicUrl:
    Type: AWS::Lambda::Permission
    Properties: {Action: lambda:InvokeFunctionUrl, FunctionName: !Ref Other, Principal: "*", FunctionUrlAuthType: NONE}
"""
EXPECTED = [
    "Role.Policies[0].PolicyDocument: wildcard action 's3:*'",
    "Role.Policies[0].PolicyDocument: dynamodb:GetItem on wildcard resource "
    "'arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:*'",
    "Policy.PolicyDocument: sqs:SendMessage on wildcard resource '*'",
    "Policy.PolicyDocument: an Allow with NotAction grants every other action",
    "PublicInvoke: lambda:InvokeFunction for any principal ('*')",
    "IamUrlForAnyone: lambda:InvokeFunctionUrl for any principal ('*')",
    "OtherPublicUrl: a public function URL for 'Other', which PUBLIC_URLS does not list",
]


def self_test() -> int:
    found = problems(yaml.load(SELF_TEST, Loader=Loader))
    clean = problems(yaml.load(SELF_TEST.split("              - !If")[0], Loader=Loader))
    if found != EXPECTED or clean:
        print("check_iam: self-test failed", file=sys.stderr)
        print(f"  expected: {EXPECTED}\n  found:    {found}\n  clean part found: {clean}", file=sys.stderr)
        return 1
    print(f"check_iam: self-test passed ({len(EXPECTED)} planted problems caught, the clean statements passed)")
    return 0


def main() -> int:
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    args = [a for a in sys.argv[1:] if not a.startswith("-")]
    if len(args) > 1 or len(args) != len(sys.argv[1:]):
        print(__doc__, file=sys.stderr)
        return 2
    return check(pathlib.Path(args[0]) if args else ROOT / "infra" / "template.yaml")


if __name__ == "__main__":
    sys.exit(main())
