//! The MD5 digests SQS returns so that clients can check what it stored:
//! `MD5OfMessageBody` (of the body's UTF-8 bytes) and
//! `MD5OfMessageAttributes`, over an encoding of the attributes that the
//! SDKs recompute and compare (boto3 and the Rust SDK refuse a response whose
//! digests do not match).
//!
//! The attribute encoding (SQS Developer Guide, "Calculating the MD5 message
//! digest for message attributes"): attributes sorted by name; for each, the
//! name, the data type, one transport byte (1 for `String` and `Number`
//! types, 2 for `Binary`) and the value, every variable-length part preceded
//! by its length as a 4-byte big-endian integer.

use md5::{Digest, Md5};

/// Hex MD5 of a message body.
pub fn of_body(body: &str) -> String {
    hex::encode(Md5::digest(body.as_bytes()))
}

/// Hex MD5 of message attributes given as `(name, data type, string value)`;
/// `None` when there are none (SQS then omits the field).
pub fn of_attributes<'a>(attributes: impl IntoIterator<Item = (&'a str, &'a str, &'a str)>) -> Option<String> {
    let mut sorted: Vec<(&str, &str, &str)> = attributes.into_iter().collect();
    if sorted.is_empty() {
        return None;
    }
    sorted.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    let mut md5 = Md5::new();
    let part = |md5: &mut Md5, bytes: &[u8]| {
        // SQS caps names, types and values far below 4 GiB.
        let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
        md5.update(len.to_be_bytes());
        md5.update(bytes);
    };
    for (name, data_type, value) in sorted {
        part(&mut md5, name.as_bytes());
        part(&mut md5, data_type.as_bytes());
        md5.update([if data_type.starts_with("Binary") { 2u8 } else { 1u8 }]);
        part(&mut md5, value.as_bytes());
    }
    Some(hex::encode(md5.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_digest_is_plain_md5() {
        assert_eq!(of_body(""), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(of_body("hello"), "5d41402abc4b2a76b9719d911017c592");
    }

    #[test]
    fn attribute_digests_match_the_published_examples() {
        // The examples of the `aws-md5-of-message-attributes` npm package,
        // which follows the algorithm of the SQS Developer Guide.
        assert_eq!(
            of_attributes([("attribName1", "String", "attribValue 1")]).as_deref(),
            Some("19e27d4e946b072f3f58da80d94fd778")
        );
        assert_eq!(
            of_attributes([("customNumberTypeAttrib", "Number.float", "4563442423554324324264524243.32543234")])
                .as_deref(),
            Some("9fe1b90bbd9965bdf77bac517c7d2495")
        );
        assert_eq!(of_attributes([]), None);
    }

    #[test]
    fn attribute_order_does_not_matter() {
        let a = of_attributes([("b", "String", "2"), ("a", "String", "1")]);
        let b = of_attributes([("a", "String", "1"), ("b", "String", "2")]);
        assert_eq!(a, b);
    }
}
