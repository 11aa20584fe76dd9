//! Result sets as the console sends them: RowDescription, DataRows and
//! CommandComplete, with PgBouncer's column types (text, int4, int8, numeric).
//! Values go out in text format, or in binary where an extended-protocol Bind
//! asked for it (tokio-postgres asks for binary on every column).

use bytes::{BufMut, BytesMut};
use weir_wire::build::{put_cstr, put_frame};

/// A column's type, as announced in RowDescription.
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

/// A column's wire format, chosen per column by the client's Bind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Format {
    /// Text (format code 0): what the simple protocol always uses.
    #[default]
    Text,
    /// Binary (format code 1): PostgreSQL's send format for the column's type.
    Binary,
}

impl Format {
    fn code(self) -> i16 {
        match self {
            Format::Text => 0,
            Format::Binary => 1,
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

    /// Appends RowDescription, the DataRows and CommandComplete(`tag`), all in text format.
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
    put_row_description_in(buf, cols, &[]);
}

/// Appends a RowDescription ('T') announcing `formats[i]` for column `i` (text past the end).
pub fn put_row_description_in(buf: &mut BytesMut, cols: &[(&str, ColType)], formats: &[Format]) {
    put_frame(buf, b'T', |b| {
        b.put_i16(i16::try_from(cols.len()).unwrap_or(i16::MAX));
        for (i, (name, ty)) in cols.iter().enumerate() {
            put_cstr(b, name.as_bytes());
            b.put_u32(0); // table OID
            b.put_i16(0); // column number
            b.put_u32(ty.oid());
            b.put_i16(ty.size());
            b.put_i32(-1); // type modifier
            b.put_i16(formats.get(i).copied().unwrap_or_default().code());
        }
    });
}

/// Appends a DataRow ('D') of `ncols` text values (NULL past the end of `vals`).
pub fn put_data_row(buf: &mut BytesMut, ncols: usize, vals: &[Val]) {
    put_frame(buf, b'D', |b| {
        b.put_i16(i16::try_from(ncols).unwrap_or(i16::MAX));
        for i in 0..ncols {
            put_text(b, vals.get(i));
        }
    });
}

/// Appends a DataRow ('D') with one value per column of `cols`, column `i` in
/// `formats[i]` (text past the end) and NULL past the end of `vals`.
pub fn put_data_row_in(
    buf: &mut BytesMut,
    cols: &[(&str, ColType)],
    vals: &[Val],
    formats: &[Format],
) {
    put_frame(buf, b'D', |b| {
        b.put_i16(i16::try_from(cols.len()).unwrap_or(i16::MAX));
        for (i, (_, ty)) in cols.iter().enumerate() {
            let val = vals.get(i);
            match formats.get(i).copied().unwrap_or_default() {
                Format::Text => put_text(b, val),
                Format::Binary => put_binary(b, *ty, val),
            }
        }
    });
}

fn put_text(b: &mut BytesMut, val: Option<&Val>) {
    match val {
        None | Some(Val::Null) => b.put_i32(-1),
        Some(Val::Text(s)) => put_value(b, s.as_bytes()),
        Some(Val::Int(v)) => put_value(b, v.to_string().as_bytes()),
    }
}

/// PostgreSQL's binary send format: text as its UTF-8 bytes, int4/int8 big-endian
/// (an int4 column clamps to the i32 range), numeric as base-10000 digits.
fn put_binary(b: &mut BytesMut, ty: ColType, val: Option<&Val>) {
    let int = match val {
        None | Some(Val::Null) => return b.put_i32(-1),
        Some(Val::Text(s)) if ty == ColType::Text => return put_value(b, s.as_bytes()),
        Some(Val::Int(v)) if ty == ColType::Text => return put_value(b, v.to_string().as_bytes()),
        Some(Val::Int(v)) => *v,
        // The SHOW tables put only integers in integer columns; a stray text
        // value there has no binary form, so it goes out as NULL.
        Some(Val::Text(s)) => match s.parse::<i64>() {
            Ok(v) => v,
            Err(_) => return b.put_i32(-1),
        },
    };
    match ty {
        ColType::Int4 => {
            let v = i32::try_from(int).unwrap_or(if int < 0 { i32::MIN } else { i32::MAX });
            put_value(b, &v.to_be_bytes());
        }
        ColType::Int8 => put_value(b, &int.to_be_bytes()),
        ColType::Numeric | ColType::Text => put_value(b, &numeric_binary(int)),
    }
}

/// An integer in PostgreSQL's binary numeric format (`numeric_send`): ndigits,
/// weight, sign, dscale, then base-10000 digits, most significant first, with
/// trailing zero digits dropped (the weight still places the first digit).
pub fn numeric_binary(v: i64) -> Vec<u8> {
    const POSITIVE: u16 = 0x0000;
    const NEGATIVE: u16 = 0x4000;
    let mut rest = v.unsigned_abs();
    let mut digits = Vec::new(); // least significant first
    while rest > 0 {
        digits.push(i16::try_from(rest % 10_000).unwrap_or(0));
        rest /= 10_000;
    }
    let weight = i16::try_from(digits.len()).unwrap_or(1) - 1;
    let weight = weight.max(0);
    let trailing = digits.iter().take_while(|d| **d == 0).count();
    let digits = digits.get(trailing..).unwrap_or_default();
    let mut out = Vec::with_capacity(8 + 2 * digits.len());
    out.extend_from_slice(&i16::try_from(digits.len()).unwrap_or(0).to_be_bytes());
    out.extend_from_slice(&weight.to_be_bytes());
    out.extend_from_slice(&if v < 0 { NEGATIVE } else { POSITIVE }.to_be_bytes());
    out.extend_from_slice(&0u16.to_be_bytes()); // dscale: no fractional digits
    for d in digits.iter().rev() {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
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

/// Appends a ParameterDescription ('t') with these type OIDs.
pub fn put_parameter_description(buf: &mut BytesMut, oids: &[u32]) {
    put_frame(buf, b't', |b| {
        b.put_i16(i16::try_from(oids.len()).unwrap_or(i16::MAX));
        for oid in oids {
            b.put_u32(*oid);
        }
    });
}

/// Appends a message with no body: ParseComplete ('1'), BindComplete ('2'),
/// CloseComplete ('3'), NoData ('n') or PortalSuspended ('s').
pub fn put_empty(buf: &mut BytesMut, tag: u8) {
    put_frame(buf, tag, |_| {});
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(b: &[u8]) -> Vec<i16> {
        b.chunks(2)
            .map(|c| i16::from_be_bytes([c[0], c[1]]))
            .collect()
    }

    #[test]
    fn numeric_binary_matches_numeric_send() {
        // [ndigits, weight, sign, dscale, digits...], as PostgreSQL 15 sends them.
        assert_eq!(words(&numeric_binary(0)), [0, 0, 0, 0]);
        assert_eq!(words(&numeric_binary(7)), [1, 0, 0, 0, 7]);
        assert_eq!(words(&numeric_binary(10_000)), [1, 1, 0, 0, 1]);
        assert_eq!(
            words(&numeric_binary(123_456_789)),
            [3, 2, 0, 0, 1, 2345, 6789]
        );
        assert_eq!(words(&numeric_binary(100_000_002)), [3, 2, 0, 0, 1, 0, 2]);
        assert_eq!(words(&numeric_binary(-5)), [1, 0, 0x4000, 0, 5]);
        let min = words(&numeric_binary(i64::MIN)); // 9223372036854775808
        assert_eq!(min, [5, 4, 0x4000, 0, 922, 3372, 368, 5477, 5808]);
    }

    #[test]
    fn binary_rows_use_each_types_send_format() {
        let cols = [
            ("a", ColType::Text),
            ("b", ColType::Int4),
            ("c", ColType::Int8),
            ("d", ColType::Int4),
        ];
        let mut buf = BytesMut::new();
        let vals = [Val::from("x"), Val::Int(-2), Val::Int(3), Val::Int(1 << 40)];
        put_data_row_in(&mut buf, &cols, &vals, &[Format::Binary; 4]);
        let mut want = vec![b'D', 0, 0, 0, 39, 0, 4, 0, 0, 0, 1, b'x', 0, 0, 0, 4];
        want.extend_from_slice(&(-2i32).to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 8]);
        want.extend_from_slice(&3i64.to_be_bytes());
        want.extend_from_slice(&[0, 0, 0, 4]);
        want.extend_from_slice(&i32::MAX.to_be_bytes());
        assert_eq!(&buf[..], &want[..]);
    }
}
