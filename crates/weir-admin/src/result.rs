//! Result sets as the console sends them: RowDescription, DataRows and
//! CommandComplete, with PgBouncer's column types (text, int4, int8, numeric).

use bytes::{BufMut, BytesMut};
use weir_wire::build::{put_cstr, put_frame};

/// A column's type, as announced in RowDescription (values are always text format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColType {
    /// `text` (OID 25).
    Text,
    /// `int4` (OID 23).
    Int4,
    /// `int8` (OID 20).
    Int8,
    /// `numeric` (OID 1700): PgBouncer's type for the `SHOW STATS` counters.
    Numeric,
}

impl ColType {
    fn oid(self) -> u32 {
        match self {
            ColType::Text => 25,
            ColType::Int4 => 23,
            ColType::Int8 => 20,
            ColType::Numeric => 1700,
        }
    }

    fn size(self) -> i16 {
        match self {
            ColType::Text | ColType::Numeric => -1,
            ColType::Int4 => 4,
            ColType::Int8 => 8,
        }
    }
}

/// One value of a row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Val {
    /// SQL NULL.
    Null,
    /// A text value.
    Text(String),
    /// An integer (printed in decimal).
    Int(i64),
}

impl From<&str> for Val {
    fn from(s: &str) -> Self {
        Val::Text(s.to_owned())
    }
}

impl From<String> for Val {
    fn from(s: String) -> Self {
        Val::Text(s)
    }
}

impl From<Option<String>> for Val {
    fn from(s: Option<String>) -> Self {
        s.map_or(Val::Null, Val::Text)
    }
}

impl From<u64> for Val {
    fn from(v: u64) -> Self {
        Val::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}

impl From<u32> for Val {
    fn from(v: u32) -> Self {
        Val::Int(i64::from(v))
    }
}

impl From<u16> for Val {
    fn from(v: u16) -> Self {
        Val::Int(i64::from(v))
    }
}

impl From<i32> for Val {
    fn from(v: i32) -> Self {
        Val::Int(i64::from(v))
    }
}

impl From<bool> for Val {
    /// PgBouncer shows flags as int4 0/1.
    fn from(v: bool) -> Self {
        Val::Int(i64::from(v))
    }
}

/// A complete result set: columns and rows.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Table {
    /// Column names and types, in order.
    pub cols: Vec<(&'static str, ColType)>,
    /// Rows; each has one value per column.
    pub rows: Vec<Vec<Val>>,
}

impl Table {
    /// An empty table with these columns.
    pub fn new(cols: &[(&'static str, ColType)]) -> Self {
        Self {
            cols: cols.to_vec(),
            rows: Vec::new(),
        }
    }

    /// Adds a row (missing values are sent as NULL, extra ones dropped).
    pub fn push(&mut self, row: Vec<Val>) {
        self.rows.push(row);
    }

    /// Appends RowDescription, the DataRows and CommandComplete(`tag`).
    pub fn write(&self, buf: &mut BytesMut, tag: &str) {
        put_row_description(buf, &self.cols);
        for row in &self.rows {
            put_data_row(buf, self.cols.len(), row);
        }
        put_command_complete(buf, tag);
    }
}

/// Appends a RowDescription ('T') for text-format columns.
pub fn put_row_description(buf: &mut BytesMut, cols: &[(&str, ColType)]) {
    put_frame(buf, b'T', |b| {
        b.put_i16(i16::try_from(cols.len()).unwrap_or(i16::MAX));
        for (name, ty) in cols {
            put_cstr(b, name.as_bytes());
            b.put_u32(0); // table OID
            b.put_i16(0); // column number
            b.put_u32(ty.oid());
            b.put_i16(ty.size());
            b.put_i32(-1); // type modifier
            b.put_i16(0); // text format
        }
    });
}

/// Appends a DataRow ('D') of `ncols` text values (NULL past the end of `vals`).
pub fn put_data_row(buf: &mut BytesMut, ncols: usize, vals: &[Val]) {
    put_frame(buf, b'D', |b| {
        b.put_i16(i16::try_from(ncols).unwrap_or(i16::MAX));
        for i in 0..ncols {
            match vals.get(i) {
                None | Some(Val::Null) => b.put_i32(-1),
                Some(Val::Text(s)) => put_value(b, s.as_bytes()),
                Some(Val::Int(v)) => put_value(b, v.to_string().as_bytes()),
            }
        }
    });
}

fn put_value(b: &mut BytesMut, v: &[u8]) {
    b.put_i32(i32::try_from(v.len()).unwrap_or(i32::MAX));
    b.put_slice(v);
}

/// Appends a CommandComplete ('C') with `tag`.
pub fn put_command_complete(buf: &mut BytesMut, tag: &str) {
    put_frame(buf, b'C', |b| put_cstr(b, tag.as_bytes()));
}

/// Appends an EmptyQueryResponse ('I').
pub fn put_empty_query(buf: &mut BytesMut) {
    put_frame(buf, b'I', |_| {});
}

/// Appends a NoticeResponse ('N') with severity NOTICE, SQLSTATE 00000, a message and a detail.
pub fn put_notice(buf: &mut BytesMut, message: &str, detail: &str) {
    put_frame(buf, b'N', |b| {
        for (field, value) in [
            (b'S', "NOTICE"),
            (b'V', "NOTICE"),
            (b'C', "00000"),
            (b'M', message),
            (b'D', detail),
        ] {
            b.put_u8(field);
            put_cstr(b, value.as_bytes());
        }
        b.put_u8(0);
    });
}
