//! Parquet tables (the `parquet` feature), read and written without Arrow.
//!
//! Reading turns each row into a JSON object (lists, structs and maps included) and
//! hands it to the same decoders as JSON files. Writing gives each top-level field a
//! column typed by its first value: text (UTF8), an integer (INT64), or, for the
//! schema's turn list, `list<struct<role, content>>` (or `from`/`value`), the layout
//! Hugging Face datasets use. Values of other kinds (objects, turns with extra fields, a
//! number where the column holds text) are kept, for their row, in one JSON object in
//! the column [`JSON_COLUMN`], which the reader folds back.
//! Snappy, zstd and LZ4 compressed files are read; files are written with Snappy.

use std::fs::File;
use std::path::Path;
use std::sync::Arc;

use parquet::basic::{Compression, ConvertedType, Repetition, Type as PhysicalType};
use parquet::data_type::{ByteArray, ByteArrayType, DataType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::FileReader;
use parquet::file::serialized_reader::SerializedFileReader;
use parquet::file::writer::{SerializedFileWriter, SerializedRowGroupWriter};
use parquet::record::{Field, Row};
use parquet::schema::types::{Type, TypePtr};
use serde_json::{Map, Value};

use crate::codec::out::Out;
use crate::error::{Error, Location, Result};
use crate::format::Schema;

/// Column holding, as JSON text, the fields that have no column of their own.
pub const JSON_COLUMN: &str = "seqit_json";

/// Rows per row group.
const ROW_GROUP: usize = 50_000;

/// The rows of a Parquet file as JSON objects.
pub(crate) struct RowSource {
    rows: parquet::record::reader::RowIter<'static>,
}

impl RowSource {
    pub fn open(path: &Path) -> Result<Self> {
        let file = File::open(path).map_err(|e| Error::read(path, e))?;
        let reader = SerializedFileReader::new(file).map_err(|e| {
            Error::at(
                &Location::file(path),
                format!("not a readable Parquet file: {e}"),
            )
        })?;
        if reader.metadata().file_metadata().num_rows() == 0 {
            return Err(Error::at(
                &Location::file(path),
                "the file holds no records",
            ));
        }
        Ok(Self {
            rows: reader.into_iter(),
        })
    }

    /// The next row, or a message saying why it cannot be read.
    pub fn next(&mut self) -> Option<std::result::Result<Value, String>> {
        let row = self.rows.next()?;
        Some(
            row.map_err(|e| format!("cannot read the row: {e}"))
                .and_then(row_to_json),
        )
    }
}

fn row_to_json(row: Row) -> std::result::Result<Value, String> {
    let mut object = Map::new();
    let mut extra = None;
    for (name, field) in row.get_column_iter() {
        let value = field_to_json(field);
        if value.is_null() {
            continue;
        }
        if name == JSON_COLUMN {
            extra = Some(value);
        } else {
            object.insert(name.clone(), value);
        }
    }
    if let Some(extra) = extra {
        let text = extra.as_str().unwrap_or_default();
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(fields)) => object.extend(fields),
            _ => {
                return Err(format!(
                    "column `{JSON_COLUMN}`: expected a JSON object as text"
                ))
            }
        }
    }
    Ok(Value::Object(object))
}

fn field_to_json(field: &Field) -> Value {
    let number = |n: serde_json::Number| Value::Number(n);
    let float = |f: f64| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number);
    match field {
        Field::Null => Value::Null,
        Field::Bool(b) => Value::Bool(*b),
        Field::Byte(n) => number((*n).into()),
        Field::Short(n) => number((*n).into()),
        Field::Int(n) => number((*n).into()),
        Field::Long(n) => number((*n).into()),
        Field::UByte(n) => number((*n).into()),
        Field::UShort(n) => number((*n).into()),
        Field::UInt(n) => number((*n).into()),
        Field::ULong(n) => number((*n).into()),
        Field::Float16(n) => float(f64::from(*n)),
        Field::Float(n) => float(f64::from(*n)),
        Field::Double(n) => float(*n),
        Field::Str(s) => Value::String(s.clone()),
        Field::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => Value::String(s.to_string()),
            Err(_) => Value::Array(b.data().iter().map(|&x| Value::from(x)).collect()),
        },
        Field::Group(row) => Value::Object(
            row.get_column_iter()
                .map(|(k, v)| (k.clone(), field_to_json(v)))
                .collect(),
        ),
        Field::ListInternal(list) => {
            Value::Array(list.elements().iter().map(field_to_json).collect())
        }
        Field::MapInternal(map) => Value::Object(
            map.entries()
                .iter()
                .map(|(k, v)| {
                    let key = match field_to_json(k) {
                        Value::String(s) => s,
                        other => other.to_string(),
                    };
                    (key, field_to_json(v))
                })
                .collect(),
        ),
        // Dates, times and decimals: their display form.
        other => Value::String(other.to_string()),
    }
}

/// The kind of column a field gets.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Unknown,
    Text,
    Integer,
    Turns,
    Json,
}

fn turn_keys(schema: Schema) -> Option<(&'static str, &'static str, &'static str)> {
    match schema {
        Schema::ShareGpt => Some(("conversations", "from", "value")),
        Schema::Messages => Some(("messages", "role", "content")),
        _ => None,
    }
}

/// Whether `value` is a list of turns with exactly the two string fields.
fn plain_turns(value: &Out, role: &str, content: &str) -> bool {
    let Out::List(items) = value else {
        return false;
    };
    items.iter().all(|item| match item {
        Out::Obj(fields) => {
            fields.len() == 2
                && fields[0].0 == role
                && fields[1].0 == content
                && fields.iter().all(|(_, v)| v.as_str().is_some())
        }
        _ => false,
    })
}

fn kind_of(value: &Out, turns: Option<(&str, &str)>) -> Option<Kind> {
    if let Some((role, content)) = turns {
        return Some(if plain_turns(value, role, content) {
            Kind::Turns
        } else {
            Kind::Json
        });
    }
    Some(match value {
        Out::Json(Value::Null) => return None,
        Out::Str(_) | Out::Json(Value::String(_)) => Kind::Text,
        Out::Json(Value::Number(n)) if n.is_i64() => Kind::Integer,
        _ => Kind::Json,
    })
}

/// Writes encoded records as one Parquet table.
pub(crate) fn write_rows(
    file: File,
    schema: Schema,
    rows: &[Vec<(String, Out)>],
) -> std::io::Result<()> {
    write_rows_inner(file, schema, rows).map_err(std::io::Error::other)
}

fn write_rows_inner(
    file: File,
    schema: Schema,
    rows: &[Vec<(String, Out)>],
) -> parquet::errors::Result<()> {
    let turns = turn_keys(schema);
    let turn_names = |key: &str| {
        turns
            .filter(|(list, _, _)| *list == key)
            .map(|(_, r, c)| (r, c))
    };
    // Columns in first-seen order, typed by their first non-null value. A value of
    // another kind goes, for its row only, into the JSON column.
    let mut columns: Vec<(String, Kind)> = Vec::new();
    for row in rows {
        for (key, value) in row {
            let kind = kind_of(value, turn_names(key));
            match columns.iter_mut().find(|(k, _)| k == key) {
                Some((_, slot)) => {
                    if *slot == Kind::Unknown {
                        *slot = kind.unwrap_or(Kind::Unknown);
                    }
                }
                None => columns.push((key.clone(), kind.unwrap_or(Kind::Unknown))),
            }
        }
    }
    for (_, kind) in &mut columns {
        if *kind == Kind::Unknown {
            *kind = Kind::Text; // only nulls
        }
    }
    let column_kind = |key: &str| {
        columns
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, kind)| *kind)
    };
    // Whether a value is stored in its own column (nulls are, as nulls).
    let in_column = |key: &str, value: &Out| -> bool {
        let kind = column_kind(key);
        kind != Some(Kind::Json) && kind_of(value, turn_names(key)).is_none_or(|k| Some(k) == kind)
    };
    let any_json = rows
        .iter()
        .any(|row| row.iter().any(|(k, v)| !in_column(k, v)));
    let mut fields: Vec<TypePtr> = Vec::new();
    for (name, kind) in &columns {
        match kind {
            Kind::Text => fields.push(Arc::new(text_column(name, Repetition::OPTIONAL)?)),
            Kind::Integer => fields.push(Arc::new(
                Type::primitive_type_builder(name, PhysicalType::INT64)
                    .with_repetition(Repetition::OPTIONAL)
                    .build()?,
            )),
            Kind::Turns => {
                let (_, role, content) = turns.expect("turn columns only for turn schemas");
                let element = Type::group_type_builder("element")
                    .with_repetition(Repetition::REQUIRED)
                    .with_fields(vec![
                        Arc::new(text_column(role, Repetition::REQUIRED)?),
                        Arc::new(text_column(content, Repetition::REQUIRED)?),
                    ])
                    .build()?;
                let list = Type::group_type_builder("list")
                    .with_repetition(Repetition::REPEATED)
                    .with_fields(vec![Arc::new(element)])
                    .build()?;
                fields.push(Arc::new(
                    Type::group_type_builder(name)
                        .with_repetition(Repetition::OPTIONAL)
                        .with_converted_type(ConvertedType::LIST)
                        .with_fields(vec![Arc::new(list)])
                        .build()?,
                ));
            }
            Kind::Json | Kind::Unknown => {}
        }
    }
    let json_column = any_json || columns.is_empty();
    if json_column {
        fields.push(Arc::new(text_column(JSON_COLUMN, Repetition::OPTIONAL)?));
    }
    let table = Arc::new(
        Type::group_type_builder("schema")
            .with_fields(fields)
            .build()?,
    );
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .build(),
    );
    let mut writer = SerializedFileWriter::new(file, table, props)?;
    for group in rows.chunks(ROW_GROUP) {
        let mut row_group = writer.next_row_group()?;
        for (name, kind) in &columns {
            // The row's value for this column, when it is stored there.
            let value_of = |row: &'_ Vec<(String, Out)>| -> Option<Out> {
                row.iter()
                    .find(|(k, v)| k == name && in_column(k, v))
                    .map(|(_, v)| v.clone())
            };
            match kind {
                Kind::Text => write_optional::<ByteArrayType>(&mut row_group, group, |row| {
                    value_of(row)
                        .as_ref()
                        .and_then(Out::as_str)
                        .map(|s| ByteArray::from(s.as_bytes().to_vec()))
                })?,
                Kind::Integer => write_optional::<Int64Type>(&mut row_group, group, |row| {
                    match value_of(row)? {
                        Out::Json(Value::Number(n)) => Some(n.as_i64().expect("checked integer")),
                        _ => None,
                    }
                })?,
                Kind::Turns => {
                    // Two leaf columns: role (or from), then content (or value).
                    for part in 0..2 {
                        let mut values = Vec::new();
                        let mut defs = Vec::new();
                        let mut reps = Vec::new();
                        for row in group {
                            match value_of(row) {
                                Some(Out::List(items)) if !items.is_empty() => {
                                    for (i, item) in items.iter().enumerate() {
                                        let Out::Obj(f) = item else { unreachable!() };
                                        let text = f[part].1.as_str().expect("checked text");
                                        values.push(ByteArray::from(text.as_bytes().to_vec()));
                                        defs.push(2);
                                        reps.push(i16::from(i > 0));
                                    }
                                }
                                Some(Out::List(_)) => {
                                    defs.push(1);
                                    reps.push(0);
                                }
                                _ => {
                                    defs.push(0);
                                    reps.push(0);
                                }
                            }
                        }
                        write_column::<ByteArrayType>(&mut row_group, &values, &defs, Some(&reps))?;
                    }
                }
                Kind::Json | Kind::Unknown => {}
            }
        }
        if json_column {
            write_optional::<ByteArrayType>(&mut row_group, group, |row| {
                let rest: Vec<(String, Out)> = row
                    .iter()
                    .filter(|(k, v)| !in_column(k, v))
                    .cloned()
                    .collect();
                (!rest.is_empty())
                    .then(|| ByteArray::from(crate::codec::to_json_line(rest).into_bytes()))
            })?;
        }
        row_group.close()?;
    }
    writer.close()?;
    Ok(())
}

/// Writes the next column of `row_group`: `values`, at definition levels `defs` (and,
/// for a list, repetition levels `reps`).
fn write_column<T: DataType>(
    row_group: &mut SerializedRowGroupWriter<'_, File>,
    values: &[T::T],
    defs: &[i16],
    reps: Option<&[i16]>,
) -> parquet::errors::Result<()> {
    let mut column = row_group.next_column()?.expect("one writer per column");
    column.typed::<T>().write_batch(values, Some(defs), reps)?;
    column.close()
}

/// Writes the next column of `row_group`, an optional flat one: each row's `value`, null
/// where it has none.
fn write_optional<T: DataType>(
    row_group: &mut SerializedRowGroupWriter<'_, File>,
    rows: &[Vec<(String, Out)>],
    value: impl Fn(&Vec<(String, Out)>) -> Option<T::T>,
) -> parquet::errors::Result<()> {
    let mut values = Vec::new();
    let mut defs = Vec::new();
    for row in rows {
        match value(row) {
            Some(v) => {
                values.push(v);
                defs.push(1);
            }
            None => defs.push(0),
        }
    }
    write_column::<T>(row_group, &values, &defs, None)
}

fn text_column(name: &str, repetition: Repetition) -> parquet::errors::Result<Type> {
    Type::primitive_type_builder(name, PhysicalType::BYTE_ARRAY)
        .with_repetition(repetition)
        .with_converted_type(ConvertedType::UTF8)
        .build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{encode, EncodeOptions};
    use crate::record::Record;

    /// Plain turns get a `list<struct>` column; a row whose turns carry extra fields
    /// keeps them in the JSON column, for that row only.
    #[test]
    fn columns_are_typed_and_odd_rows_fall_back_to_json() {
        let plain = Record::exchange("Hi", None, Some("Hello"));
        let mut odd = Record::exchange("Q", None, Some("A"));
        odd.id = Some(serde_json::json!(7));
        odd.metadata.insert(
            crate::TURN_FIELDS_KEY.into(),
            serde_json::json!({"1": {"weight": 0}}),
        );
        let mut named = plain.clone();
        named.id = Some(serde_json::json!("x"));
        let rows: Vec<_> = [&named, &odd, &plain]
            .iter()
            .map(|r| encode(Schema::Messages, r, &EncodeOptions::default()).unwrap())
            .collect();
        let file = tempfile::NamedTempFile::new().unwrap();
        write_rows(file.reopen().unwrap(), Schema::Messages, &rows).unwrap();
        let reader = SerializedFileReader::new(file.reopen().unwrap()).unwrap();
        let schema = reader.metadata().file_metadata().schema_descr();
        let leaves: Vec<String> = (0..schema.num_columns())
            .map(|i| schema.column(i).path().string())
            .collect();
        assert_eq!(
            leaves,
            [
                "id",
                "messages.list.element.role",
                "messages.list.element.content",
                "seqit_json"
            ]
        );
        let values: Vec<Value> = reader
            .into_iter()
            .map(|row| {
                let row = row.unwrap();
                row.get_column_iter()
                    .find(|(name, _)| name.as_str() == JSON_COLUMN)
                    .map(|(_, f)| field_to_json(f))
                    .unwrap()
            })
            .collect();
        assert_eq!(values[0], Value::Null);
        assert_eq!(
            values[1],
            Value::String(
                r#"{"id":7,"messages":[{"role":"user","content":"Q"},{"role":"assistant","content":"A","weight":0}]}"#
                    .into()
            )
        );
        assert_eq!(values[2], Value::Null);
    }
}
