//! Encoding events for the store without copying them.

use ktrail_proto::v1::Event;
use prost::Message;

/// The bytes of `StoredEvent { node, event }`, written field by field so the
/// event need not be cloned into the wrapper.
pub fn encode_stored_event(node: &str, event: &Event) -> Vec<u8> {
    let mut buf = Vec::with_capacity(node.len() + event.encoded_len() + 8);
    prost::encoding::string::encode(1, &node.to_owned(), &mut buf);
    prost::encoding::message::encode(2, event, &mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoredEvent;

    #[test]
    fn matches_the_wrapper_message() {
        let event = Event {
            seq: 9,
            comm: "kubelet".into(),
            ..Event::default()
        };
        let bytes = encode_stored_event("n1", &event);
        let decoded = StoredEvent::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decoded.node, "n1");
        assert_eq!(decoded.event, Some(event));
    }
}
