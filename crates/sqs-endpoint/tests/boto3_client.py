"""boto3, unmodified, against sqsaga's SQS endpoint.

Run by tests/boto3.rs with AWS_ENDPOINT_URL (and dummy credentials) in the
environment: nothing here names the endpoint, so this is what any boto3
program sees when pointed at the embedded backend. Covers the supported
actions, long polling, visibility expiry, batch limits, oversize messages,
SQS-shaped errors, and the MD5 digests (computed here independently: boto3
does not check them itself). Exits non-zero on the first failure.
"""

import hashlib
import struct
import sys
import threading
import time

import boto3
from botocore.exceptions import ClientError

QUEUE = sys.argv[1] if len(sys.argv) > 1 else "jobs"
MIB = 1024 * 1024


def md5_of_attributes(attributes):
    """The SQS Developer Guide's algorithm, over {name: {DataType, StringValue}}."""
    out = b""
    for name in sorted(attributes):
        value = attributes[name]
        for part in (name, value["DataType"]):
            encoded = part.encode()
            out += struct.pack(">I", len(encoded)) + encoded
        out += b"\x01"
        encoded = value["StringValue"].encode()
        out += struct.pack(">I", len(encoded)) + encoded
    return hashlib.md5(out).hexdigest()


def error_code(call):
    try:
        call()
    except ClientError as e:
        return e.response["Error"]["Code"]
    raise AssertionError("expected an error")


def check(condition, what):
    if not condition:
        raise AssertionError(what)
    print("ok:", what)


sqs = boto3.client("sqs")
url = sqs.get_queue_url(QueueName=QUEUE)["QueueUrl"]
check(url.endswith("/000000000000/" + QUEUE), "GetQueueUrl returns an SQS-style URL: " + url)

# Send with attributes; the digests are what SQS would compute.
body = '{"type":"reply","saga_id":"py-1"} — ünïcode'
attributes = {
    "traceparent": {"DataType": "String", "StringValue": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
    "sqsaga-signature": {"DataType": "String", "StringValue": "v1,t=1,k=abcdef01,s=00"},
}
sent = sqs.send_message(QueueUrl=url, MessageBody=body, MessageAttributes=attributes)
check(sent["MD5OfMessageBody"] == hashlib.md5(body.encode()).hexdigest(), "MD5OfMessageBody of SendMessage")
check(sent["MD5OfMessageAttributes"] == md5_of_attributes(attributes), "MD5OfMessageAttributes of SendMessage")

got = sqs.receive_message(
    QueueUrl=url,
    MaxNumberOfMessages=10,
    WaitTimeSeconds=1,
    MessageSystemAttributeNames=["All"],
    MessageAttributeNames=["All"],
)["Messages"]
check(len(got) == 1 and got[0]["Body"] == body, "ReceiveMessage returns the body as sent")
m = got[0]
check(m["MD5OfBody"] == hashlib.md5(body.encode()).hexdigest(), "MD5OfBody of ReceiveMessage")
check(m["MessageAttributes"] == attributes, "message attributes come back")
check(m["MD5OfMessageAttributes"] == md5_of_attributes(m["MessageAttributes"]), "MD5OfMessageAttributes of ReceiveMessage")
check(m["Attributes"]["ApproximateReceiveCount"] == "1", "ApproximateReceiveCount")

# Visibility: hidden while in flight, back after it expires.
sqs.change_message_visibility(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"], VisibilityTimeout=1)
check("Messages" not in sqs.receive_message(QueueUrl=url), "in flight: invisible")
started = time.monotonic()
back = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=5, AttributeNames=["ApproximateReceiveCount"])["Messages"]
check(time.monotonic() - started < 4, "a long poll returns when the visibility timeout expires")
check(back[0]["Attributes"]["ApproximateReceiveCount"] == "2", "received a second time")
sqs.delete_message(QueueUrl=url, ReceiptHandle=back[0]["ReceiptHandle"])

# Long polling: an empty poll waits, a send wakes it.
started = time.monotonic()
check("Messages" not in sqs.receive_message(QueueUrl=url, WaitTimeSeconds=1), "empty long poll")
check(time.monotonic() - started >= 0.9, "an empty long poll waits its WaitTimeSeconds")
threading.Timer(0.3, lambda: boto3.client("sqs").send_message(QueueUrl=url, MessageBody="late")).start()
started = time.monotonic()
late = sqs.receive_message(QueueUrl=url, WaitTimeSeconds=20).get("Messages", [])
waited = time.monotonic() - started
check(len(late) == 1 and 0.25 <= waited < 10, "a long poll returns when a message arrives (%.2fs)" % waited)
sqs.delete_message(QueueUrl=url, ReceiptHandle=late[0]["ReceiptHandle"])

# Batches: at most 10 entries.
eleven = [{"Id": "m%d" % i, "MessageBody": "b%d" % i} for i in range(11)]
code = error_code(lambda: sqs.send_message_batch(QueueUrl=url, Entries=eleven))
check(code == "AWS.SimpleQueueService.TooManyEntriesInBatchRequest", "11 entries: " + code)
try:
    sqs.send_message_batch(QueueUrl=url, Entries=eleven)
except sqs.exceptions.TooManyEntriesInBatchRequest:
    print("ok: boto3 raises its modeled TooManyEntriesInBatchRequest")
ten = eleven[:10]
result = sqs.send_message_batch(QueueUrl=url, Entries=ten)
check(len(result["Successful"]) == 10 and not result.get("Failed"), "10 entries are sent")
for ok in result["Successful"]:
    check(ok["MD5OfMessageBody"] == hashlib.md5(("b" + ok["Id"][1:]).encode()).hexdigest(), "batch MD5 of " + ok["Id"])
received = []
while len(received) < 10:
    received += sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
deleted = sqs.delete_message_batch(
    QueueUrl=url, Entries=[{"Id": "d%d" % i, "ReceiptHandle": r["ReceiptHandle"]} for i, r in enumerate(received)]
)
check(len(deleted["Successful"]) == 10, "DeleteMessageBatch of 10")
code = error_code(lambda: sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=11))
check(code == "InvalidParameterValue", "MaxNumberOfMessages 11: " + code)

# Oversize: over 1 MiB is refused, 1 MiB is accepted.
code = error_code(lambda: sqs.send_message(QueueUrl=url, MessageBody="x" * (MIB + 1)))
check(code == "InvalidParameterValue", "a body over 1 MiB: " + code)
sqs.send_message(QueueUrl=url, MessageBody="x" * MIB)
print("ok: a body of exactly 1 MiB is accepted")

# Errors: unknown queue, unsupported action.
try:
    sqs.get_queue_url(QueueName="no-such-queue")
    raise AssertionError("an unknown queue has a URL")
except sqs.exceptions.QueueDoesNotExist as e:
    print("ok: unknown queue raises QueueDoesNotExist:", e.response["Error"]["Code"])
code = error_code(lambda: sqs.send_message(QueueUrl=url.rsplit("/", 1)[0] + "/no-such-queue", MessageBody="x"))
check(code == "AWS.SimpleQueueService.NonExistentQueue", "SendMessage to an unknown queue: " + code)
code = error_code(lambda: sqs.purge_queue(QueueUrl=url))
check(code == "AWS.SimpleQueueService.UnsupportedOperation", "PurgeQueue is unsupported: " + code)

depth = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"]
check(depth == {"ApproximateNumberOfMessages": "1"}, "GetQueueAttributes counts the 1 MiB message: %s" % depth)
print("boto3: all checks passed")
