//! The SQS query protocol, for SDKs that still speak it to SQS (the AWS SDK
//! for Go v2 before 1.24, which Debian packages; boto3 before 1.34.x): a
//! form-encoded request (`Action=SendMessage&QueueUrl=...`, in the body or
//! the URL) and an XML response. It is translated at the edge: the form
//! becomes the AWS JSON 1.0 request body the actions already take, and
//! their JSON result becomes the XML SQS answers, so both protocols run the
//! same action code.
//!
//! Form to JSON, as the SQS query API flattens its members: `AttributeName.N`
//! → `AttributeNames`, `MessageAttributeName.N` → `MessageAttributeNames`,
//! `MessageAttribute.N.{Name,Value.DataType,Value.StringValue}` →
//! `MessageAttributes`, `<Action>RequestEntry.N.*` → `Entries`; counts and
//! seconds become numbers.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::error::SqsError;

/// The query protocol's XML namespace.
const XMLNS: &str = "http://queue.amazonaws.com/doc/2012-11-05/";
/// Members that are integers in the JSON protocol.
const NUMBERS: &[&str] = &["MaxNumberOfMessages", "VisibilityTimeout", "WaitTimeSeconds", "DelaySeconds"];

/// Decodes `application/x-www-form-urlencoded` text into its pairs.
pub fn parse_form(text: &[u8]) -> Result<Vec<(String, String)>, SqsError> {
    let decode = |part: &[u8]| -> Result<String, SqsError> {
        let mut out = Vec::with_capacity(part.len());
        let mut i = 0;
        while i < part.len() {
            match part[i] {
                b'+' => out.push(b' '),
                b'%' => {
                    let hex = part.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
                    let byte = hex.and_then(|h| u8::from_str_radix(h, 16).ok()).ok_or_else(|| {
                        SqsError::invalid_parameter_value("Malformed percent-encoding in the request form.")
                    })?;
                    out.push(byte);
                    i += 2;
                }
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8(out).map_err(|_| SqsError::invalid_parameter_value("The request form is not UTF-8."))
    };
    text.split(|b| *b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let mut kv = pair.splitn(2, |b| *b == b'=');
            let key = decode(kv.next().unwrap_or_default())?;
            let value = decode(kv.next().unwrap_or_default())?;
            Ok((key, value))
        })
        .collect()
}

/// A form's members as a tree: `A.1.B=x` is `{A: {1: {B: x}}}`.
#[derive(Debug, Default)]
struct Node {
    value: Option<String>,
    children: BTreeMap<String, Node>,
}

impl Node {
    fn insert(&mut self, path: &[&str], value: String) {
        match path.split_first() {
            None => self.value = Some(value),
            Some((first, rest)) => self.children.entry((*first).to_string()).or_default().insert(rest, value),
        }
    }

    /// Numbered children (`.1`, `.2`, ...) in their order.
    fn items(&self) -> Vec<&Node> {
        let mut numbered: Vec<(u64, &Node)> =
            self.children.iter().filter_map(|(k, v)| k.parse::<u64>().ok().map(|n| (n, v))).collect();
        numbered.sort_by_key(|(n, _)| *n);
        numbered.into_iter().map(|(_, v)| v).collect()
    }

    fn text(&self, name: &str) -> Option<String> {
        self.children.get(name).and_then(|n| n.value.clone())
    }

    /// The members of a structure, as the JSON protocol names them.
    fn to_json(&self) -> Value {
        let mut out = Map::new();
        for (name, node) in &self.children {
            match name.as_str() {
                "Action" | "Version" => {}
                "AttributeName" | "MessageAttributeName" | "MessageSystemAttributeName" => {
                    let list = node.items().iter().filter_map(|n| n.value.clone()).map(Value::String).collect();
                    out.insert(format!("{name}s"), Value::Array(list));
                }
                "MessageAttribute" => {
                    let mut map = Map::new();
                    for item in node.items() {
                        let Some(attr) = item.text("Name") else { continue };
                        let value = item.children.get("Value").map(Node::to_json).unwrap_or_else(|| json!({}));
                        map.insert(attr, value);
                    }
                    out.insert("MessageAttributes".to_string(), Value::Object(map));
                }
                entries if entries.ends_with("RequestEntry") => {
                    let list = node.items().iter().map(|n| n.to_json()).collect();
                    out.insert("Entries".to_string(), Value::Array(list));
                }
                _ => {
                    let value = match &node.value {
                        Some(v) if NUMBERS.contains(&name.as_str()) => {
                            v.trim().parse::<i64>().map(Value::from).unwrap_or_else(|_| Value::String(v.clone()))
                        }
                        Some(v) => Value::String(v.clone()),
                        None => node.to_json(),
                    };
                    out.insert(name.clone(), value);
                }
            }
        }
        Value::Object(out)
    }
}

/// The action a form names and its members as the AWS JSON 1.0 request body.
pub fn to_json_request(pairs: &[(String, String)]) -> Result<(String, Vec<u8>), SqsError> {
    let mut root = Node::default();
    for (key, value) in pairs {
        let path: Vec<&str> = key.split('.').collect();
        root.insert(&path, value.clone());
    }
    let action = root
        .text("Action")
        .filter(|a| !a.is_empty())
        .ok_or_else(|| SqsError::missing_parameter("The request must contain the parameter Action."))?;
    let body = serde_json::to_vec(&root.to_json()).map_err(|e| SqsError::internal(e.to_string()))?;
    Ok((action, body))
}

/// `text` escaped for XML character data; a carriage return as a character
/// reference, or XML parsers would turn it into a line feed.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\r' => out.push_str("&#xD;"),
            c => out.push(c),
        }
    }
    out
}

fn scalar(value: &Value) -> String {
    match value {
        Value::String(s) => escape(s),
        Value::Null => String::new(),
        other => escape(&other.to_string()),
    }
}

/// The XML of the JSON members `fields` of action `action`'s result.
fn members(action: &str, fields: &Map<String, Value>, out: &mut String) {
    for (name, value) in fields {
        match (name.as_str(), value) {
            ("Messages", Value::Array(items)) => {
                for item in items {
                    element("Message", action, item, out);
                }
            }
            ("Successful", Value::Array(items)) => {
                for item in items {
                    element(&format!("{action}ResultEntry"), action, item, out);
                }
            }
            ("Failed", Value::Array(items)) => {
                for item in items {
                    element("BatchResultErrorEntry", action, item, out);
                }
            }
            ("Attributes", Value::Object(map)) => {
                for (k, v) in map {
                    out.push_str(&format!(
                        "<Attribute><Name>{}</Name><Value>{}</Value></Attribute>",
                        escape(k),
                        scalar(v)
                    ));
                }
            }
            ("MessageAttributes", Value::Object(map)) => {
                for (k, v) in map {
                    out.push_str(&format!("<MessageAttribute><Name>{}</Name>", escape(k)));
                    element("Value", action, v, out);
                    out.push_str("</MessageAttribute>");
                }
            }
            (_, value) => element(name, action, value, out),
        }
    }
}

fn element(name: &str, action: &str, value: &Value, out: &mut String) {
    out.push_str(&format!("<{name}>"));
    match value {
        Value::Object(fields) => members(action, fields, out),
        other => out.push_str(&scalar(other)),
    }
    out.push_str(&format!("</{name}>"));
}

/// The XML response of a successful `action` whose JSON result is `result`.
pub fn render_result(action: &str, result: &Value, request_id: &str) -> String {
    let mut inner = String::new();
    if let Value::Object(fields) = result
        && !fields.is_empty()
    {
        inner.push_str(&format!("<{action}Result>"));
        members(action, fields, &mut inner);
        inner.push_str(&format!("</{action}Result>"));
    }
    format!(
        "<?xml version=\"1.0\"?><{action}Response xmlns=\"{XMLNS}\">{inner}<ResponseMetadata><RequestId>{}</RequestId>\
         </ResponseMetadata></{action}Response>",
        escape(request_id)
    )
}

/// The XML of an error response.
pub fn render_error(e: &SqsError, request_id: &str) -> String {
    let kind = if e.sender_fault() { "Sender" } else { "Receiver" };
    format!(
        "<?xml version=\"1.0\"?><ErrorResponse xmlns=\"{XMLNS}\"><Error><Type>{kind}</Type><Code>{}</Code>\
         <Message>{}</Message><Detail/></Error><RequestId>{}</RequestId></ErrorResponse>",
        escape(e.code),
        escape(&e.message),
        escape(request_id)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(form: &str) -> (String, Value) {
        let pairs = parse_form(form.as_bytes()).unwrap_or_default();
        let (action, body) = to_json_request(&pairs).unwrap_or_else(|e| panic!("{form}: {}", e.message));
        (action, serde_json::from_slice(&body).unwrap_or_default())
    }

    #[test]
    fn forms_become_the_json_protocol_requests() {
        let cases: &[(&str, &str, Value)] = &[
            ("Action=GetQueueUrl&QueueName=payment&Version=2012-11-05", "GetQueueUrl", json!({"QueueName": "payment"})),
            (
                "Action=ReceiveMessage&QueueUrl=http%3A%2F%2Fh%2F0%2Fq&MaxNumberOfMessages=10&WaitTimeSeconds=20\
                 &MessageAttributeName.1=All&AttributeName.1=ApproximateReceiveCount",
                "ReceiveMessage",
                json!({"QueueUrl": "http://h/0/q", "MaxNumberOfMessages": 10, "WaitTimeSeconds": 20,
                       "MessageAttributeNames": ["All"], "AttributeNames": ["ApproximateReceiveCount"]}),
            ),
            (
                "Action=SendMessage&QueueUrl=u&MessageBody=%7B%22a%22%3A+1%7D&MessageAttribute.1.Name=traceparent\
                 &MessageAttribute.1.Value.DataType=String&MessageAttribute.1.Value.StringValue=00-ab",
                "SendMessage",
                json!({"QueueUrl": "u", "MessageBody": "{\"a\": 1}",
                       "MessageAttributes": {"traceparent": {"DataType": "String", "StringValue": "00-ab"}}}),
            ),
            (
                "Action=DeleteMessageBatch&QueueUrl=u&DeleteMessageBatchRequestEntry.2.Id=b\
                 &DeleteMessageBatchRequestEntry.2.ReceiptHandle=r2&DeleteMessageBatchRequestEntry.1.Id=a\
                 &DeleteMessageBatchRequestEntry.1.ReceiptHandle=r1",
                "DeleteMessageBatch",
                json!({"QueueUrl": "u", "Entries": [{"Id": "a", "ReceiptHandle": "r1"}, {"Id": "b", "ReceiptHandle": "r2"}]}),
            ),
        ];
        for (form, action, want) in cases {
            assert_eq!(request(form), (action.to_string(), want.clone()), "{form}");
        }
        assert!(to_json_request(&[("QueueName".into(), "q".into())]).is_err(), "no Action");
        assert!(parse_form(b"a=%zz").is_err());
    }

    #[test]
    fn results_and_errors_are_the_xml_sqs_answers() {
        let received = json!({"Messages": [{"MessageId": "m", "ReceiptHandle": "r", "MD5OfBody": "d", "Body": "<a>&\r",
            "Attributes": {"ApproximateReceiveCount": "1"},
            "MessageAttributes": {"traceparent": {"DataType": "String", "StringValue": "t"}}}]});
        let xml = render_result("ReceiveMessage", &received, "req-1");
        assert!(!xml.contains("<Attributes>"), "{xml}");
        assert!(xml.contains("<Body>&lt;a&gt;&amp;&#xD;</Body>"), "{xml}");
        assert!(xml.contains("<Attribute><Name>ApproximateReceiveCount</Name><Value>1</Value></Attribute>"), "{xml}");
        assert!(
            xml.contains("<MessageAttribute><Name>traceparent</Name><Value><DataType>String</DataType><StringValue>t</StringValue></Value></MessageAttribute>"),
            "{xml}"
        );
        assert!(
            xml.ends_with("<ResponseMetadata><RequestId>req-1</RequestId></ResponseMetadata></ReceiveMessageResponse>")
        );
        let empty = render_result("DeleteMessage", &json!({}), "r");
        assert!(empty.contains("<DeleteMessageResponse") && !empty.contains("DeleteMessageResult"), "{empty}");
        let e = SqsError::queue_does_not_exist("no such queue");
        let xml = render_error(&e, "r");
        assert!(xml.contains("<Type>Sender</Type><Code>AWS.SimpleQueueService.NonExistentQueue</Code>"), "{xml}");
    }
}
