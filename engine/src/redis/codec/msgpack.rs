//! MessagePack, the script's wire format both ways: Lua's `cmsgpack` packs and unpacks it in C,
//! where `cjson` parsing requests and Redis converting nested reply tables (seven probes per
//! table for `err`, `ok`, `map`...) took about a sixth of the server's work per job.

use crate::runtime::StoreError;
use ::redis::Value;
use rmpv::Value as Packed;

/// A request built as JSON, packed: what the script unpacks with `cmsgpack.unpack`.
pub fn pack(value: &serde_json::Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &to_packed(value)).expect("writing to a Vec cannot fail");
    bytes
}

fn to_packed(value: &serde_json::Value) -> Packed {
    use serde_json::Value as J;
    match value {
        J::Null => Packed::Nil,
        J::Bool(b) => Packed::Boolean(*b),
        J::Number(n) => match (n.as_u64(), n.as_i64()) {
            (Some(u), _) => Packed::from(u),
            (None, Some(i)) => Packed::from(i),
            _ => Packed::F64(n.as_f64().unwrap_or(0.0)),
        },
        J::String(s) => Packed::from(s.as_str()),
        J::Array(items) => Packed::Array(items.iter().map(to_packed).collect()),
        J::Object(map) => Packed::Map(
            map.iter()
                .map(|(k, v)| (Packed::from(k.as_str()), to_packed(v)))
                .collect(),
        ),
    }
}

/// The script's packed reply as the value Redis would have made of the same Lua value: false
/// is nil, true is 1, numbers are truncated to integers, strings are bulk strings.
pub fn unpack(value: &Value) -> Result<Value, StoreError> {
    let Value::BulkString(bytes) = value else {
        return Err(StoreError::Decode(format!(
            "expected a packed reply, got {value:?}"
        )));
    };
    let packed = rmpv::decode::read_value(&mut bytes.as_slice())
        .map_err(|e| StoreError::Decode(format!("packed reply: {e}")))?;
    from_packed(packed)
}

fn from_packed(packed: Packed) -> Result<Value, StoreError> {
    Ok(match packed {
        Packed::Nil | Packed::Boolean(false) => Value::Nil,
        Packed::Boolean(true) => Value::Int(1),
        Packed::Integer(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Int(i64::MAX),
        },
        // Redis casts a Lua number to long long; `as` truncates the same way.
        Packed::F32(x) => Value::Int(x as i64),
        Packed::F64(x) => Value::Int(x as i64),
        Packed::String(s) => Value::BulkString(s.into_bytes()),
        Packed::Binary(b) => Value::BulkString(b),
        Packed::Array(items) => Value::Array(
            items
                .into_iter()
                .map(from_packed)
                .collect::<Result<_, _>>()?,
        ),
        // cmsgpack packs a Lua table with a hole (a nil inside) as a map: a script bug.
        other => {
            return Err(StoreError::Decode(format!(
                "packed reply holds {other:?}, not an array"
            )))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn values_read_back_as_redis_would_convert_them() {
        let mut bytes = Vec::new();
        let reply = Packed::Array(vec![
            Packed::from("claimed"),
            Packed::Boolean(false),
            Packed::Boolean(true),
            Packed::from(1_700_000_000_000_123u64),
            Packed::F64(-2.7),
            Packed::Array(vec![]),
        ]);
        rmpv::encode::write_value(&mut bytes, &reply).unwrap();
        let value = unpack(&Value::BulkString(bytes)).unwrap();
        assert_eq!(
            value,
            Value::Array(vec![
                Value::BulkString(b"claimed".to_vec()),
                Value::Nil,
                Value::Int(1),
                Value::Int(1_700_000_000_000_123),
                Value::Int(-2),
                Value::Array(vec![]),
            ])
        );
    }

    #[test]
    fn a_map_or_a_non_string_reply_is_a_decode_error() {
        let mut bytes = Vec::new();
        let map = Packed::Map(vec![(Packed::from(1), Packed::from("a"))]);
        rmpv::encode::write_value(&mut bytes, &map).unwrap();
        assert!(unpack(&Value::BulkString(bytes)).is_err());
        assert!(unpack(&Value::Int(3)).is_err());
        // An array of two that ends after one element.
        assert!(unpack(&Value::BulkString(vec![0x92, 0x01])).is_err());
    }

    #[test]
    fn requests_keep_numbers_as_numbers() {
        let bytes = pack(&json!({"op": "complete", "job": 42, "token": 1_700_000_000_000_001u64}));
        let back = rmpv::decode::read_value(&mut bytes.as_slice()).unwrap();
        let map = back.as_map().unwrap();
        let get = |k: &str| {
            map.iter()
                .find(|(key, _)| key.as_str() == Some(k))
                .unwrap()
                .1
                .clone()
        };
        assert_eq!(get("op").as_str(), Some("complete"));
        assert_eq!(get("job").as_u64(), Some(42));
        assert_eq!(get("token").as_u64(), Some(1_700_000_000_000_001));
    }
}
