#!/usr/bin/env python3
"""Renders infra/template.yaml: the shared resources once, then the same block per atom.

    python infra/render.py          # rewrite infra/template.yaml
    python infra/render.py --check  # fail if the committed template is not what this renders

Each atom gets a queue (with a policy: only the stack's roles send to it), a dead-letter queue
with an alarm, a least-privilege role, a function and an event source mapping, sized by its
profile. The sweeper is one more function, invoked every minute by a schedule. Add an atom by
adding a line to ATOMS (and a crate under functions/)."""

import sys
import pathlib

ROOT = pathlib.Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "infra" / "template.yaml"

# (atom type, CloudFormation name, extra IAM statements)
DIGEST_WRITE = """              - Effect: Allow
                Action: s3:PutObject
                Resource: !Sub "${DigestBucket.Arn}/digests/*"
              - Effect: Allow
                Action: ses:SendEmail
                Resource: !Sub "arn:${AWS::Partition}:ses:${AWS::Region}:${AWS::AccountId}:identity/*"
"""
# Atoms that ask a model: Bedrock (when ModelProvider is bedrock) or the API key in Secrets
# Manager (when it is openai-compatible with a key).
MODEL_INVOKE = """              - Effect: Allow
                Action: [bedrock:InvokeModel]
                Resource:
                  - !Sub "arn:${AWS::Partition}:bedrock:*::foundation-model/*"
                  - !Sub "arn:${AWS::Partition}:bedrock:*:${AWS::AccountId}:inference-profile/*"
              - Effect: Allow
                Action: secretsmanager:GetSecretValue
                Resource: !Sub "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:reanimate-config/${AWS::StackName}/model-api-key-*"
"""
# Atoms that read mailboxes: users' Gmail refresh tokens, reanimate/STACK/INSTANCE/… (the
# activities also check that a token belongs to the calling instance's user).
SECRET_READ = """              - Effect: Allow
                Action: secretsmanager:GetSecretValue
                Resource: !Sub "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:reanimate/${AWS::StackName}/*"
"""
# The assistant deletes its user's secrets when the user disconnects.
SECRET_DELETE = """              - Effect: Allow
                Action: secretsmanager:DeleteSecret
                Resource: !Sub "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:reanimate/${AWS::StackName}/*"
"""
# How a function is sized. Every record is handled within the invocation's deadline (records of
# different instances in a batch run concurrently; a record still running near the deadline is
# handed back). The queue's visibility timeout is six times the function timeout, as AWS
# recommends for SQS event sources, and MaximumConcurrency caps the concurrent invocations per
# queue, so a fan-in's children contend for their parent with at most that many writers.
STEPS = dict(timeout=30, batch=10, window=0, visibility=180, concurrency=10)
# Atoms whose activities call a model or a mailbox: a model call may take 60 s and be retried
# (the activities' time limit is 250 s); a batch the size of the model client's concurrency.
ACTIVITIES = dict(timeout=300, batch=4, window=0, visibility=1800, concurrency=5)

# (atom type, CloudFormation name, extra IAM statements, profile)
ATOMS = [
    ("countdown", "Countdown", "", STEPS),
    ("fan-out", "FanOut", "", STEPS),
    ("worker", "Worker", "", STEPS),
    ("approval", "Approval", "", STEPS),
    ("email-assistant", "EmailAssistant", MODEL_INVOKE + SECRET_DELETE, ACTIVITIES),
    ("bulk-email-analysis", "BulkEmailAnalysis", MODEL_INVOKE, ACTIVITIES),
    ("fetch-emails", "FetchEmails", SECRET_READ, ACTIVITIES),
    ("summarize-rank", "SummarizeRank", MODEL_INVOKE + SECRET_READ, ACTIVITIES),
    ("write-digest", "WriteDigest", DIGEST_WRITE, ACTIVITIES),
    ("planner", "Planner", MODEL_INVOKE, ACTIVITIES),
]

# Every function the deploy zips: (crate under functions/, CloudFormation name).
FUNCTIONS = [(atom, name) for atom, name, _, _ in ATOMS] + [("sweeper", "Sweeper")]

HEADER = """AWSTemplateFormatVersion: "2010-09-09"
Description: >-
  reanimate: one Lambda per atom, each fed by its own SQS queue (with a dead-letter queue), state
  in DynamoDB, timers in EventBridge Scheduler, lifecycle events on an EventBridge bus, digests in
  S3. The same template deploys to LocalStack (make integ, make demo) and to AWS (README.md).
  Rendered by infra/render.py; edit that, not this file.

Parameters:
  CodeBucket:
    Type: String
    Description: S3 bucket holding the functions' zipped bootstrap binaries.
{code_keys}  Architecture:
    Type: String
    Default: x86_64
    AllowedValues: [x86_64, arm64]
  MaxQueueDelaySeconds:
    Type: Number
    Default: 900
    MinValue: 0
    MaxValue: 900
    Description: Timers due within this many seconds use an SQS delay; later ones a Scheduler schedule.
  RetentionSeconds:
    Type: Number
    Default: 2592000
    Description: How long a finished instance is kept before DynamoDB's TTL deletes it (30 days).
  DigestSender:
    Type: String
    Default: digests@reanimate.example
    Description: The address digests are emailed from (an SES identity the deploy verifies).
  MailRoot:
    Type: String
    Default: /var/task/mail
    Description: Folder under which Maildir mailboxes named in the assistant's auth answers live.
  ModelProvider:
    Type: String
    Default: offline
    AllowedValues: [offline, bedrock, openai-compatible]
    Description: The language model the playbooks use (offline is a deterministic heuristic, not a language model).
  ModelUrl:
    Type: String
    Default: ""
    Description: For openai-compatible, the API root (https://api.openai.com/v1, http://host:11434/v1 for Ollama).
  ModelName:
    Type: String
    Default: ""
    Description: For bedrock and openai-compatible, the everyday model (a Bedrock model or inference profile id).
  StrongModelName:
    Type: String
    Default: ""
    Description: For bedrock and openai-compatible, the stronger model the planner and careful summaries use (default ModelName).
  ModelApiKey:
    Type: String
    Default: ""
    NoEcho: true
    Description: >-
      For openai-compatible, the API key, if the endpoint needs one. Kept in Secrets Manager
      (reanimate-config/STACK/model-api-key, outside the users' reanimate/STACK/), readable only
      by the roles of atoms that call models.
  GmailClientId:
    Type: String
    Default: ""
    Description: The Google OAuth client id (an installed app) Gmail refresh tokens were issued to.
  GmailClientSecret:
    Type: String
    Default: ""
    NoEcho: true
    Description: That client's secret (not confidential for installed apps, but kept out of logs).
  GmailTokenUrl:
    Type: String
    Default: https://oauth2.googleapis.com/token
  GmailApiUrl:
    Type: String
    Default: https://gmail.googleapis.com
  AlarmTopicArn:
    Type: String
    Default: ""
    Description: An SNS topic the dead-letter alarms notify (none if empty).

Conditions:
  HasAlarmTopic: !Not [!Equals [!Ref AlarmTopicArn, ""]]
  HasModelApiKey: !Not [!Equals [!Ref ModelApiKey, ""]]

Resources:
  ModelApiKeySecret:
    Type: AWS::SecretsManager::Secret
    Condition: HasModelApiKey
    Properties:
      Name: !Sub "reanimate-config/${{AWS::StackName}}/model-api-key"
      SecretString: !Ref ModelApiKey

  InstancesTable:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {{AttributeName: id, AttributeType: S}}
        - {{AttributeName: outbox_pending, AttributeType: S}}
        - {{AttributeName: outbox_pending_since, AttributeType: N}}
      KeySchema:
        - {{AttributeName: id, KeyType: HASH}}
      # Sparse: only records whose outbox could not be sent carry its keys; the sweeper queries it.
      GlobalSecondaryIndexes:
        - IndexName: by-pending-outbox
          KeySchema:
            - {{AttributeName: outbox_pending, KeyType: HASH}}
            - {{AttributeName: outbox_pending_since, KeyType: RANGE}}
          Projection: {{ProjectionType: INCLUDE, NonKeyAttributes: [version]}}
      TimeToLiveSpecification: {{AttributeName: expires_at, Enabled: true}}

  InboxTable:
    Type: AWS::DynamoDB::Table
    Properties:
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {{AttributeName: id, AttributeType: S}}
        - {{AttributeName: status, AttributeType: S}}
        - {{AttributeName: created_at, AttributeType: N}}
      KeySchema:
        - {{AttributeName: id, KeyType: HASH}}
      GlobalSecondaryIndexes:
        - IndexName: by-status
          KeySchema:
            - {{AttributeName: status, KeyType: HASH}}
            - {{AttributeName: created_at, KeyType: RANGE}}
          Projection: {{ProjectionType: ALL}}

  DigestBucket:
    Type: AWS::S3::Bucket
    Properties:
      PublicAccessBlockConfiguration:
        BlockPublicAcls: true
        BlockPublicPolicy: true
        IgnorePublicAcls: true
        RestrictPublicBuckets: true

  EventBus:
    Type: AWS::Events::EventBus
    Properties:
      Name: !Sub "${{AWS::StackName}}-events"

  TimerGroup:
    Type: AWS::Scheduler::ScheduleGroup
    Properties:
      Name: !Sub "${{AWS::StackName}}-timers"

  # Assumed by EventBridge Scheduler to deliver long timers to the atoms' queues.
  SchedulerRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {{Service: scheduler.amazonaws.com}}
            Action: sts:AssumeRole
            Condition:
              StringEquals: {{"aws:SourceAccount": !Ref AWS::AccountId}}
      Policies:
        - PolicyName: send-to-atom-queues
          PolicyDocument:
            Version: "2012-10-17"
            Statement:
              - Effect: Allow
                Action: sqs:SendMessage
                Resource:
{queue_arns}
  # For people and programs outside the stack (the reanimate CLI, a web inbox): start, signal,
  # cancel and answer; read instances; operate the dead-letter queues. The atom queues accept
  # messages only from this role, the functions' roles and the Scheduler role.
  ClientRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {{AWS: !Sub "arn:${{AWS::Partition}}:iam::${{AWS::AccountId}}:root"}}
            Action: sts:AssumeRole
      Policies:
        - PolicyName: reanimate-client
          PolicyDocument:
            Version: "2012-10-17"
            Statement:
              - Effect: Allow
                Action: sqs:SendMessage
                Resource:
{queue_arns}              - Effect: Allow
                Action: [sqs:ReceiveMessage, sqs:DeleteMessage, sqs:GetQueueAttributes, sqs:ChangeMessageVisibility]
                Resource:
{dead_letter_arns}              - Effect: Allow
                Action: [dynamodb:GetItem, dynamodb:Scan]
                Resource: !GetAtt InstancesTable.Arn
              - Effect: Allow
                Action: [dynamodb:GetItem, dynamodb:UpdateItem, dynamodb:Query]
                Resource: [!GetAtt InboxTable.Arn, !Sub "${{InboxTable.Arn}}/index/by-status"]
              - Effect: Allow
                Action: [secretsmanager:CreateSecret, secretsmanager:PutSecretValue, secretsmanager:DescribeSecret]
                Resource: !Sub "arn:${{AWS::Partition}}:secretsmanager:${{AWS::Region}}:${{AWS::AccountId}}:secret:reanimate/${{AWS::StackName}}/*"
              - Effect: Allow
                Action: [s3:GetObject, s3:ListBucket]
                Resource: [!GetAtt DigestBucket.Arn, !Sub "${{DigestBucket.Arn}}/digests/*"]

  # --- sweeper ---------------------------------------------------------------------------------
  # Sends the outboxes that could not be sent when their step was saved (records marked in the
  # by-pending-outbox index), every minute.
  SweeperRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {{Service: lambda.amazonaws.com}}
            Action: sts:AssumeRole
      Policies:
        - PolicyName: sweeper
          PolicyDocument:
            Version: "2012-10-17"
            Statement:
              - Effect: Allow
                Action: [logs:CreateLogGroup, logs:CreateLogStream, logs:PutLogEvents]
                Resource: !Sub "arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:/aws/lambda/*"
              - Effect: Allow
                Action: [dynamodb:GetItem, dynamodb:UpdateItem]
                Resource: !GetAtt InstancesTable.Arn
              - Effect: Allow
                Action: dynamodb:Query
                Resource: !Sub "${{InstancesTable.Arn}}/index/by-pending-outbox"
              - Effect: Allow
                Action: [dynamodb:GetItem, dynamodb:PutItem, dynamodb:UpdateItem]
                Resource: !GetAtt InboxTable.Arn
              - Effect: Allow
                Action: sqs:SendMessage
                Resource:
{queue_arns}              - Effect: Allow
                Action: [scheduler:CreateSchedule, scheduler:DeleteSchedule]
                Resource: !Sub "arn:${{AWS::Partition}}:scheduler:${{AWS::Region}}:${{AWS::AccountId}}:schedule/${{TimerGroup}}/*"
              - Effect: Allow
                Action: iam:PassRole
                Resource: !GetAtt SchedulerRole.Arn
              - Effect: Allow
                Action: events:PutEvents
                Resource: !GetAtt EventBus.Arn

  SweeperFunction:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: provided.al2023
      Handler: bootstrap
      Architectures: [!Ref Architecture]
      MemorySize: 256
      Timeout: 55
      Role: !GetAtt SweeperRole.Arn
      Code: {{S3Bucket: !Ref CodeBucket, S3Key: !Ref SweeperCodeKey}}
      Environment:
        Variables:
{environment}
  # Assumed by EventBridge Scheduler to invoke the sweeper.
  SweeperScheduleRole:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {{Service: scheduler.amazonaws.com}}
            Action: sts:AssumeRole
            Condition:
              StringEquals: {{"aws:SourceAccount": !Ref AWS::AccountId}}
      Policies:
        - PolicyName: invoke-sweeper
          PolicyDocument:
            Version: "2012-10-17"
            Statement:
              - Effect: Allow
                Action: lambda:InvokeFunction
                Resource: !GetAtt SweeperFunction.Arn

  # The sweeper fails an invocation when an outbox still cannot be sent: five minutes of that
  # (a queue gone, a permission missing after a redeploy) is an alarm.
  SweeperFailingAlarm:
    Type: AWS::CloudWatch::Alarm
    Properties:
      AlarmDescription: "sweeper: outboxes that still cannot be sent (its log says which)"
      Namespace: AWS/Lambda
      MetricName: Errors
      Dimensions:
        - {{Name: FunctionName, Value: !Ref SweeperFunction}}
      Statistic: Sum
      # A failing outbox is retried every RETRY_AFTER (5 min), so a stuck one fails the sweeper
      # every 5-6 min: two failed runs within 10 min go off; one transient failure does not.
      Period: 60
      EvaluationPeriods: 10
      DatapointsToAlarm: 2
      Threshold: 0
      ComparisonOperator: GreaterThanThreshold
      TreatMissingData: notBreaching
      AlarmActions: !If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]

  SweeperSchedule:
    Type: AWS::Scheduler::Schedule
    Properties:
      Description: reanimate sweeper - sends outboxes that could not be sent
      ScheduleExpression: rate(1 minute)
      FlexibleTimeWindow: {{Mode: "OFF"}}
      Target:
        Arn: !GetAtt SweeperFunction.Arn
        RoleArn: !GetAtt SweeperScheduleRole.Arn
        Input: '{{"sweep": true}}'
        RetryPolicy: {{MaximumRetryAttempts: 0}}
"""

ATOM = """
  # --- {atom} {rule}
  {Name}DeadLetters:
    Type: AWS::SQS::Queue
    Properties:
      MessageRetentionPeriod: 1209600

  {Name}DeadLettersAlarm:
    Type: AWS::CloudWatch::Alarm
    Properties:
      AlarmDescription: "{atom}: messages in the dead-letter queue (reanimate dead-letters list {atom})"
      Namespace: AWS/SQS
      MetricName: ApproximateNumberOfMessagesVisible
      Dimensions:
        - {{Name: QueueName, Value: !GetAtt {Name}DeadLetters.QueueName}}
      Statistic: Maximum
      Period: 60
      EvaluationPeriods: 1
      Threshold: 0
      ComparisonOperator: GreaterThanThreshold
      TreatMissingData: notBreaching
      AlarmActions: !If [HasAlarmTopic, [!Ref AlarmTopicArn], !Ref AWS::NoValue]

  {Name}Queue:
    Type: AWS::SQS::Queue
    Properties:
      VisibilityTimeout: {visibility}
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt {Name}DeadLetters.Arn
        maxReceiveCount: 5

  # Only the stack's roles, the Scheduler role and the client role may send to the queue.
  {Name}QueuePolicy:
    Type: AWS::SQS::QueuePolicy
    Properties:
      Queues: [!Ref {Name}Queue]
      PolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Sid: OnlyTheStackSends
            Effect: Deny
            Principal: "*"
            Action: sqs:SendMessage
            Resource: !GetAtt {Name}Queue.Arn
            Condition:
              ArnNotEquals:
                aws:PrincipalArn:
{sender_arns}
  {Name}Role:
    Type: AWS::IAM::Role
    Properties:
      AssumeRolePolicyDocument:
        Version: "2012-10-17"
        Statement:
          - Effect: Allow
            Principal: {{Service: lambda.amazonaws.com}}
            Action: sts:AssumeRole
      Policies:
        - PolicyName: {atom}-atom
          PolicyDocument:
            Version: "2012-10-17"
            Statement:
              - Effect: Allow
                Action: [logs:CreateLogGroup, logs:CreateLogStream, logs:PutLogEvents]
                Resource: !Sub "arn:${{AWS::Partition}}:logs:${{AWS::Region}}:${{AWS::AccountId}}:log-group:/aws/lambda/*"
              - Effect: Allow
                Action: [dynamodb:GetItem, dynamodb:PutItem, dynamodb:UpdateItem]
                Resource: !GetAtt InstancesTable.Arn
              - Effect: Allow
                Action: [dynamodb:GetItem, dynamodb:PutItem, dynamodb:UpdateItem, dynamodb:Query]
                Resource: [!GetAtt InboxTable.Arn, !Sub "${{InboxTable.Arn}}/index/by-status"]
              - Effect: Allow
                Action: [sqs:ReceiveMessage, sqs:DeleteMessage, sqs:GetQueueAttributes, sqs:ChangeMessageVisibility]
                Resource: !GetAtt {Name}Queue.Arn
              - Effect: Allow
                Action: sqs:SendMessage
                Resource:
                  - !GetAtt {Name}DeadLetters.Arn
{queue_arns}              - Effect: Allow
                Action: [scheduler:CreateSchedule, scheduler:DeleteSchedule]
                Resource: !Sub "arn:${{AWS::Partition}}:scheduler:${{AWS::Region}}:${{AWS::AccountId}}:schedule/${{TimerGroup}}/*"
              - Effect: Allow
                Action: iam:PassRole
                Resource: !GetAtt SchedulerRole.Arn
              - Effect: Allow
                Action: events:PutEvents
                Resource: !GetAtt EventBus.Arn
{extra}
  {Name}Function:
    Type: AWS::Lambda::Function
    Properties:
      Runtime: provided.al2023
      Handler: bootstrap
      Architectures: [!Ref Architecture]
      MemorySize: 256
      Timeout: {timeout}
      Role: !GetAtt {Name}Role.Arn
      Code: {{S3Bucket: !Ref CodeBucket, S3Key: !Ref {Name}CodeKey}}
      Environment:
        Variables:
          REANIMATE_DEAD_LETTER_URL: !Ref {Name}DeadLetters
{environment}
  {Name}Trigger:
    Type: AWS::Lambda::EventSourceMapping
    Properties:
      EventSourceArn: !GetAtt {Name}Queue.Arn
      FunctionName: !Ref {Name}Function
      BatchSize: {batch}
      MaximumBatchingWindowInSeconds: {window}
      ScalingConfig: {{MaximumConcurrency: {concurrency}}}
      FunctionResponseTypes: [ReportBatchItemFailures]
"""

# The configuration every function reads (REANIMATE_* in shared/aws/src/config.rs).
ENVIRONMENT = """          AWS_LAMBDA_LOG_FORMAT: JSON
          REANIMATE_STACK_NAME: !Ref AWS::StackName
          REANIMATE_INSTANCES_TABLE: !Ref InstancesTable
          REANIMATE_INBOX_TABLE: !Ref InboxTable
          REANIMATE_SCHEDULE_GROUP: !Ref TimerGroup
          REANIMATE_SCHEDULER_ROLE_ARN: !GetAtt SchedulerRole.Arn
          REANIMATE_EVENT_BUS: !Ref EventBus
          REANIMATE_MAX_QUEUE_DELAY_SECS: !Ref MaxQueueDelaySeconds
          REANIMATE_RETENTION_SECS: !Ref RetentionSeconds
          REANIMATE_DIGEST_BUCKET: !Ref DigestBucket
          REANIMATE_DIGEST_FROM: !Ref DigestSender
          REANIMATE_MAIL_ROOT: !Ref MailRoot
          REANIMATE_MODEL: !Ref ModelProvider
          REANIMATE_MODEL_URL: !Ref ModelUrl
          REANIMATE_MODEL_NAME: !Ref ModelName
          REANIMATE_STRONG_MODEL_NAME: !Ref StrongModelName
          REANIMATE_MODEL_API_KEY_SECRET: !If [HasModelApiKey, !Ref ModelApiKeySecret, ""]
          REANIMATE_GMAIL_API: !Ref GmailApiUrl
          REANIMATE_GMAIL_TOKEN_URL: !Ref GmailTokenUrl
          REANIMATE_GMAIL_CLIENT_ID: !Ref GmailClientId
          REANIMATE_GMAIL_CLIENT_SECRET: !Ref GmailClientSecret
          REANIMATE_ROUTES: !Sub '{routes}'
"""


def render() -> str:
    code_keys = "".join(
        f"  {name}CodeKey:\n    Type: String\n    Description: S3 key of the {crate} function's zip.\n"
        for crate, name in FUNCTIONS
    )
    queue_arns = "".join(f"                  - !GetAtt {name}Queue.Arn\n" for _, name, _, _ in ATOMS)
    dead_letter_arns = "".join(f"                  - !GetAtt {name}DeadLetters.Arn\n" for _, name, _, _ in ATOMS)
    sender_roles = [f"{name}Role" for _, name, _, _ in ATOMS] + ["SweeperRole", "SchedulerRole", "ClientRole"]
    sender_arns = "".join(f"                  - !GetAtt {role}.Arn\n" for role in sender_roles)
    routes = "{" + ", ".join(
        f'"{atom}": {{"url": "${{{name}Queue}}", "arn": "${{{name}Queue.Arn}}"}}' for atom, name, _, _ in ATOMS
    ) + "}"
    environment = ENVIRONMENT.format(routes=routes)
    out = HEADER.format(
        code_keys=code_keys,
        queue_arns=queue_arns,
        dead_letter_arns=dead_letter_arns,
        environment=environment,
    )
    for atom, name, extra, profile in ATOMS:
        rule = "-" * max(3, 88 - len(atom))
        out += ATOM.format(
            atom=atom,
            Name=name,
            rule=rule,
            queue_arns=queue_arns,
            sender_arns=sender_arns,
            extra=extra,
            environment=environment,
            **profile,
        )
    out += "\nOutputs:\n"
    for key, value in [
        ("StackName", "!Ref AWS::StackName"),
        ("InstancesTable", "!Ref InstancesTable"),
        ("InboxTable", "!Ref InboxTable"),
        ("DigestBucket", "!Ref DigestBucket"),
        ("DigestSender", "!Ref DigestSender"),
        ("EventBus", "!Ref EventBus"),
        ("TimerGroup", "!Ref TimerGroup"),
        ("SchedulerRoleArn", "!GetAtt SchedulerRole.Arn"),
        ("ClientRoleArn", "!GetAtt ClientRole.Arn"),
        ("SweeperFunctionName", "!Ref SweeperFunction"),
    ]:
        out += f"  {key}: {{Value: {value}}}\n"
    for _, name, _, _ in ATOMS:
        out += (
            f"  {name}QueueUrl: {{Value: !Ref {name}Queue}}\n"
            f"  {name}QueueArn: {{Value: !GetAtt {name}Queue.Arn}}\n"
            f"  {name}DeadLettersUrl: {{Value: !Ref {name}DeadLetters}}\n"
            f"  {name}FunctionName: {{Value: !Ref {name}Function}}\n"
        )
    return out


def main() -> int:
    text = render()
    if "--check" in sys.argv:
        if TEMPLATE.read_text() != text:
            print("infra/template.yaml is stale: run python infra/render.py", file=sys.stderr)
            return 1
        return 0
    TEMPLATE.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
