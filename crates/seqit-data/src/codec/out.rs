//! A JSON tree that keeps the order its fields were written in, so output files read
//! `instruction`, `input`, `output` rather than in alphabetical order.

use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};
use serde_json::Value;

/// One value of an encoded record.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Out {
    Str(String),
    Json(Value),
    Obj(Vec<(String, Out)>),
    List(Vec<Out>),
}

impl Out {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Out::Str(s) => Some(s),
            Out::Json(Value::String(s)) => Some(s),
            _ => None,
        }
    }
}

impl Serialize for Out {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Out::Str(s) => serializer.serialize_str(s),
            Out::Json(v) => v.serialize(serializer),
            Out::Obj(fields) => {
                let mut map = serializer.serialize_map(Some(fields.len()))?;
                for (k, v) in fields {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
            Out::List(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
        }
    }
}
