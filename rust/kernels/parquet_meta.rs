//! The row groups of a parquet file, from its footer (the Thrift compact-encoded
//! `FileMetaData`): rows per group and one column's statistics per group.
//!
//! `stats_from_activations` uses it to learn, without decoding the column, which row groups
//! hold a single layer (min == max, no nulls): a layer column is a string per record, and
//! decoding it is a large part of reading a file whose layers come in long runs. Only the
//! fields it needs are read; every other field is skipped by its wire type, so files from any
//! writer and any format version parse. The format: parquet-format's `parquet.thrift` and
//! Thrift's compact protocol specification.

use crate::error::KernelResult;
use crate::{ensure, fail};

/// One column's statistics in one row group, as the writer stored them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ColumnStats {
    /// The column's physical type (parquet `Type`: 6 is BYTE_ARRAY).
    pub physical_type: Option<i32>,
    /// `min_value` / `max_value` (the fields with a defined sort order; the deprecated `min` /
    /// `max` are not read: old writers compared bytes as signed).
    pub min_value: Option<Vec<u8>>,
    pub max_value: Option<Vec<u8>>,
    pub null_count: Option<i64>,
    /// `is_min_value_exact` / `is_max_value_exact` (absent: not stated).
    pub min_exact: Option<bool>,
    pub max_exact: Option<bool>,
}

/// One row group: its rows and the statistics of the requested column (None: the column is
/// not in the group or has no statistics).
#[derive(Debug, Clone, PartialEq)]
pub struct RowGroupStats {
    pub num_rows: i64,
    pub column: Option<ColumnStats>,
}

impl RowGroupStats {
    /// The one value every row of the group holds in the column, when its statistics prove it:
    /// a BYTE_ARRAY column, no nulls, `min_value == max_value` and neither stated inexact.
    /// (Under any total order min == max means every value is that value; a writer that
    /// truncates long strings rounds max up, so a truncated pair is never equal.)
    pub fn single_value(&self) -> Option<&[u8]> {
        let s = self.column.as_ref()?;
        let exact = s.min_exact != Some(false) && s.max_exact != Some(false);
        let proven = s.physical_type == Some(BYTE_ARRAY_TYPE) && s.null_count == Some(0) && exact;
        match (&s.min_value, &s.max_value) {
            (Some(lo), Some(hi)) if proven && lo == hi => Some(lo),
            _ => None,
        }
    }
}

/// Parquet's physical type BYTE_ARRAY (strings).
const BYTE_ARRAY_TYPE: i32 = 6;

/// The footer of a parquet file: the bytes between the data and the trailing
/// `<4-byte length>PAR1`. Given the last 8 bytes, the footer's length.
pub fn footer_length(tail: &[u8]) -> KernelResult<usize> {
    ensure!(
        tail.len() == 8,
        Format,
        "a parquet tail is 8 bytes, got {}",
        tail.len()
    );
    ensure!(
        &tail[4..] == b"PAR1",
        Format,
        "not a plain parquet file (no PAR1 magic at its end; encrypted footers are not read)"
    );
    Ok(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]) as usize)
}

/// Rows and `column`'s statistics for every row group, in file order. `column` is a top-level
/// column name (its `path_in_schema` is exactly `[column]`).
pub fn row_group_stats(footer: &[u8], column: &str) -> KernelResult<Vec<RowGroupStats>> {
    let mut r = Reader {
        buf: footer,
        pos: 0,
    };
    let mut groups = Vec::new();
    // FileMetaData: 4 = row_groups.
    r.read_struct(|r, id, ty| {
        if id == 4 && ty == LIST {
            let (n, elem) = r.list_header()?;
            ensure!(
                elem == STRUCT,
                Format,
                "parquet footer: row groups are not structs"
            );
            groups.reserve(n.min(1 << 20));
            for _ in 0..n {
                groups.push(r.row_group(column)?);
            }
            Ok(())
        } else {
            r.skip(ty)
        }
    })?;
    Ok(groups)
}

// Compact protocol wire types.
const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;
const UUID: u8 = 13;

/// Nesting beyond this is not a parquet footer (its deepest struct is a few levels down).
const MAX_DEPTH: usize = 64;

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn byte(&mut self) -> KernelResult<u8> {
        let b = *self
            .buf
            .get(self.pos)
            .ok_or_else(|| fail!(Format, "parquet footer ends early (at byte {})", self.pos))?;
        self.pos += 1;
        Ok(b)
    }

    fn bytes(&mut self, n: usize) -> KernelResult<&[u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| fail!(Format, "parquet footer ends inside a value"))?;
        let s = &self.buf[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn varint(&mut self) -> KernelResult<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.byte()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(fail!(
            Format,
            "parquet footer: a varint longer than 10 bytes"
        ))
    }

    fn zigzag(&mut self) -> KernelResult<i64> {
        let v = self.varint()?;
        Ok((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    fn i32(&mut self) -> KernelResult<i32> {
        i32::try_from(self.zigzag()?).map_err(|_| fail!(Format, "parquet footer: i32 overflow"))
    }

    fn binary(&mut self) -> KernelResult<Vec<u8>> {
        let n = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
        Ok(self.bytes(n)?.to_vec())
    }

    /// (size, element type) of a list or set.
    fn list_header(&mut self) -> KernelResult<(usize, u8)> {
        let b = self.byte()?;
        let size = match b >> 4 {
            15 => usize::try_from(self.varint()?).unwrap_or(usize::MAX),
            n => usize::from(n),
        };
        // Each element takes at least one byte: a larger size is a corrupt footer.
        ensure!(
            size <= self.buf.len() - self.pos,
            Format,
            "parquet footer: a list of {size} elements in {} bytes",
            self.buf.len() - self.pos
        );
        Ok((size, b & 0x0f))
    }

    /// The fields of a struct, each handed to `field(reader, id, wire type)`, which reads or
    /// skips its value. Boolean fields carry their value in the type (`BOOL_TRUE/FALSE`).
    fn read_struct<F>(&mut self, mut field: F) -> KernelResult<()>
    where
        F: FnMut(&mut Self, i16, u8) -> KernelResult<()>,
    {
        let mut last: i16 = 0;
        loop {
            let b = self.byte()?;
            if b == 0 {
                return Ok(());
            }
            let ty = b & 0x0f;
            let id = match b >> 4 {
                0 => i16::try_from(self.zigzag()?)
                    .map_err(|_| fail!(Format, "parquet footer: field id overflow"))?,
                delta => last.wrapping_add(i16::from(delta)),
            };
            last = id;
            field(self, id, ty)?;
        }
    }

    fn skip(&mut self, ty: u8) -> KernelResult<()> {
        self.skip_at(ty, 0)
    }

    fn skip_at(&mut self, ty: u8, depth: usize) -> KernelResult<()> {
        ensure!(
            depth < MAX_DEPTH,
            Format,
            "parquet footer: nesting deeper than {MAX_DEPTH}"
        );
        match ty {
            BOOL_TRUE | BOOL_FALSE => Ok(()),
            BYTE => self.byte().map(drop),
            I16 | I32 | I64 => self.varint().map(drop),
            DOUBLE => self.bytes(8).map(drop),
            UUID => self.bytes(16).map(drop),
            BINARY => {
                let n = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
                self.bytes(n).map(drop)
            }
            LIST | SET => {
                let (n, elem) = self.list_header()?;
                for _ in 0..n {
                    self.skip_element(elem, depth + 1)?;
                }
                Ok(())
            }
            MAP => {
                let n = usize::try_from(self.varint()?).unwrap_or(usize::MAX);
                if n == 0 {
                    return Ok(());
                }
                let kv = self.byte()?;
                for _ in 0..n {
                    self.skip_element(kv >> 4, depth + 1)?;
                    self.skip_element(kv & 0x0f, depth + 1)?;
                }
                Ok(())
            }
            STRUCT => self.read_struct(|r, _, t| r.skip_at(t, depth + 1)),
            other => Err(fail!(Format, "parquet footer: unknown wire type {other}")),
        }
    }

    /// Collection elements: booleans take one byte there (not the field-type trick).
    fn skip_element(&mut self, ty: u8, depth: usize) -> KernelResult<()> {
        match ty {
            BOOL_TRUE | BOOL_FALSE => self.byte().map(drop),
            _ => self.skip_at(ty, depth),
        }
    }

    fn bool_field(ty: u8) -> KernelResult<bool> {
        match ty {
            BOOL_TRUE => Ok(true),
            BOOL_FALSE => Ok(false),
            other => Err(fail!(
                Format,
                "parquet footer: a boolean field of wire type {other}"
            )),
        }
    }

    /// RowGroup: 1 = columns (list<ColumnChunk>), 3 = num_rows.
    fn row_group(&mut self, column: &str) -> KernelResult<RowGroupStats> {
        let mut num_rows = None;
        let mut found = None;
        self.read_struct(|r, id, ty| match (id, ty) {
            (1, LIST) => {
                let (n, elem) = r.list_header()?;
                ensure!(
                    elem == STRUCT,
                    Format,
                    "parquet footer: column chunks are not structs"
                );
                for _ in 0..n {
                    if let Some(stats) = r.column_chunk(column)? {
                        found = Some(stats);
                    }
                }
                Ok(())
            }
            (3, I64) => {
                num_rows = Some(r.zigzag()?);
                Ok(())
            }
            _ => r.skip(ty),
        })?;
        let num_rows =
            num_rows.ok_or_else(|| fail!(Format, "parquet footer: a row group lacks num_rows"))?;
        ensure!(
            num_rows >= 0,
            Format,
            "parquet footer: a row group of {num_rows} rows"
        );
        Ok(RowGroupStats {
            num_rows,
            column: found,
        })
    }

    /// ColumnChunk: 3 = meta_data. Some(stats) when it is `column`'s chunk.
    fn column_chunk(&mut self, column: &str) -> KernelResult<Option<ColumnStats>> {
        let mut out = None;
        self.read_struct(|r, id, ty| match (id, ty) {
            (3, STRUCT) => {
                out = r.column_meta(column)?;
                Ok(())
            }
            _ => r.skip(ty),
        })?;
        Ok(out)
    }

    /// ColumnMetaData: 1 = type, 3 = path_in_schema, 12 = statistics.
    fn column_meta(&mut self, column: &str) -> KernelResult<Option<ColumnStats>> {
        let mut path: Vec<Vec<u8>> = Vec::new();
        let mut stats = ColumnStats::default();
        self.read_struct(|r, id, ty| match (id, ty) {
            (1, I32) => {
                stats.physical_type = Some(r.i32()?);
                Ok(())
            }
            (3, LIST) => {
                let (n, elem) = r.list_header()?;
                ensure!(
                    elem == BINARY,
                    Format,
                    "parquet footer: a path that is not strings"
                );
                for _ in 0..n {
                    path.push(r.binary()?);
                }
                Ok(())
            }
            (12, STRUCT) => r.read_struct(|r, id, ty| {
                match (id, ty) {
                    (3, I64) => stats.null_count = Some(r.zigzag()?),
                    (5, BINARY) => stats.max_value = Some(r.binary()?),
                    (6, BINARY) => stats.min_value = Some(r.binary()?),
                    (7, BOOL_TRUE | BOOL_FALSE) => stats.max_exact = Some(Self::bool_field(ty)?),
                    (8, BOOL_TRUE | BOOL_FALSE) => stats.min_exact = Some(Self::bool_field(ty)?),
                    _ => r.skip(ty)?,
                }
                Ok(())
            }),
            _ => r.skip(ty),
        })?;
        Ok((path.len() == 1 && path[0] == column.as_bytes()).then_some(stats))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal compact-protocol writer for the tests' footers.
    #[derive(Default)]
    struct Writer {
        out: Vec<u8>,
        last: Vec<i16>,
    }

    impl Writer {
        fn varint(&mut self, mut v: u64) {
            while v >= 0x80 {
                self.out.push((v as u8) | 0x80);
                v >>= 7;
            }
            self.out.push(v as u8);
        }
        fn zigzag(&mut self, v: i64) {
            self.varint(((v << 1) ^ (v >> 63)) as u64);
        }
        fn field(&mut self, id: i16, ty: u8) {
            let last = self.last.last_mut().unwrap();
            let delta = id - *last;
            *last = id;
            if (1..=15).contains(&delta) {
                self.out.push(((delta as u8) << 4) | ty);
            } else {
                self.out.push(ty);
                self.zigzag(i64::from(id));
            }
        }
        fn begin(&mut self) {
            self.last.push(0);
        }
        fn end(&mut self) {
            self.out.push(0);
            self.last.pop();
        }
        fn i64_field(&mut self, id: i16, v: i64) {
            self.field(id, I64);
            self.zigzag(v);
        }
        fn i32_field(&mut self, id: i16, v: i32) {
            self.field(id, I32);
            self.zigzag(i64::from(v));
        }
        fn binary(&mut self, b: &[u8]) {
            self.varint(b.len() as u64);
            self.out.extend_from_slice(b);
        }
        fn list(&mut self, id: i16, n: usize, elem: u8) {
            self.field(id, LIST);
            if n < 15 {
                self.out.push(((n as u8) << 4) | elem);
            } else {
                self.out.push(0xf0 | elem);
                self.varint(n as u64);
            }
        }
    }

    struct Chunk<'a> {
        name: &'a str,
        min: &'a [u8],
        max: &'a [u8],
        nulls: i64,
    }

    /// A FileMetaData with extra fields of every wire type around the ones the reader reads.
    fn footer(groups: &[(i64, Vec<Chunk<'_>>)]) -> Vec<u8> {
        let mut w = Writer::default();
        w.begin();
        w.i32_field(1, 2); // version
        w.list(2, 1, STRUCT); // schema: one element with a name
        w.begin();
        w.field(4, BINARY);
        w.binary(b"schema");
        w.end();
        w.i64_field(3, groups.iter().map(|g| g.0).sum());
        w.list(4, groups.len(), STRUCT);
        for (rows, chunks) in groups {
            w.begin();
            w.list(1, chunks.len(), STRUCT);
            for c in chunks {
                w.begin();
                w.i64_field(2, 4); // file_offset
                w.field(3, STRUCT);
                w.begin();
                w.i32_field(1, 6);
                w.list(2, 2, I32);
                w.zigzag(0);
                w.zigzag(8);
                w.list(3, 1, BINARY);
                w.binary(c.name.as_bytes());
                w.i32_field(4, 6);
                w.field(8, MAP); // key_value_metadata as a map (skipped by type)
                w.varint(1);
                w.out.push((BINARY << 4) | BINARY);
                w.binary(b"k");
                w.binary(b"v");
                w.field(12, STRUCT);
                w.begin();
                w.field(1, BINARY); // deprecated max: not read
                w.binary(b"zzz");
                w.i64_field(3, c.nulls);
                w.field(5, BINARY);
                w.binary(c.max);
                w.field(6, BINARY);
                w.binary(c.min);
                w.field(7, BOOL_TRUE);
                w.end();
                w.field(13, DOUBLE); // unknown to the reader: skipped
                w.out.extend_from_slice(&1.5f64.to_le_bytes());
                w.list(14, 2, BOOL_TRUE); // booleans in a list: one byte each
                w.out.extend_from_slice(&[1, 2]);
                w.end();
                w.end();
            }
            w.i64_field(2, 100);
            w.i64_field(3, *rows);
            w.field(300, I16); // a long field-id jump
            w.zigzag(-3);
            w.end();
        }
        w.field(6, BINARY);
        w.binary(b"test writer");
        w.end();
        w.out
    }

    #[test]
    fn reads_rows_and_the_named_column_stats() {
        let chunk = |name, min, max, nulls| Chunk {
            name,
            min,
            max,
            nulls,
        };
        let f = footer(&[
            (
                5,
                vec![
                    chunk("unit", b"\0", b"\x09", 0),
                    chunk("layer", b"a", b"a", 0),
                ],
            ),
            (
                3,
                vec![
                    chunk("layer", b"a", b"b", 2),
                    chunk("unit", b"\0", b"\x01", 0),
                ],
            ),
            (20, vec![chunk("unit", b"\0", b"\x01", 0)]),
        ]);
        let groups = row_group_stats(&f, "layer").unwrap();
        assert_eq!(groups.len(), 3);
        assert_eq!(groups[0].num_rows, 5);
        let s = groups[0].column.as_ref().unwrap();
        assert_eq!(s.physical_type, Some(6));
        assert_eq!(s.min_value.as_deref(), Some(&b"a"[..]));
        assert_eq!(s.max_value.as_deref(), Some(&b"a"[..]));
        assert_eq!(
            (s.null_count, s.max_exact, s.min_exact),
            (Some(0), Some(true), None)
        );
        let s = groups[1].column.as_ref().unwrap();
        assert_eq!(
            (s.max_value.as_deref(), s.null_count),
            (Some(&b"b"[..]), Some(2))
        );
        assert_eq!(
            groups[2],
            RowGroupStats {
                num_rows: 20,
                column: None
            }
        );
        // A long list (15+ elements: the size after the header byte).
        let many: Vec<_> = (0..40)
            .map(|i| (i, vec![chunk("layer", b"x", b"x", 0)]))
            .collect();
        let groups = row_group_stats(&footer(&many), "layer").unwrap();
        assert_eq!(
            groups.iter().map(|g| g.num_rows).collect::<Vec<_>>(),
            (0..40).collect::<Vec<_>>()
        );
    }

    #[test]
    fn single_value_needs_equal_exact_bounds_and_no_nulls() {
        let stats = |min: &[u8], max: &[u8], nulls, ty, exact| RowGroupStats {
            num_rows: 4,
            column: Some(ColumnStats {
                physical_type: Some(ty),
                min_value: Some(min.to_vec()),
                max_value: Some(max.to_vec()),
                null_count: nulls,
                min_exact: exact,
                max_exact: None,
            }),
        };
        assert_eq!(
            stats(b"l0", b"l0", Some(0), 6, None).single_value(),
            Some(&b"l0"[..])
        );
        assert_eq!(
            stats(b"l0", b"l0", Some(0), 6, Some(true)).single_value(),
            Some(&b"l0"[..])
        );
        assert_eq!(stats(b"l0", b"l1", Some(0), 6, None).single_value(), None);
        assert_eq!(stats(b"l0", b"l0", Some(1), 6, None).single_value(), None);
        assert_eq!(stats(b"l0", b"l0", None, 6, None).single_value(), None);
        assert_eq!(stats(b"l0", b"l0", Some(0), 2, None).single_value(), None);
        assert_eq!(
            stats(b"l0", b"l0", Some(0), 6, Some(false)).single_value(),
            None
        );
        assert_eq!(
            RowGroupStats {
                num_rows: 1,
                column: None
            }
            .single_value(),
            None
        );
    }

    #[test]
    fn truncated_or_garbage_footers_are_errors_not_panics() {
        let f = footer(&[(
            5,
            vec![Chunk {
                name: "layer",
                min: b"a",
                max: b"a",
                nulls: 0,
            }],
        )]);
        for cut in 0..f.len() {
            assert!(row_group_stats(&f[..cut], "layer").is_err(), "cut at {cut}");
        }
        let mut state = 7u64;
        for _ in 0..2000 {
            let junk: Vec<u8> = (0..64)
                .map(|_| {
                    state = state
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    (state >> 56) as u8
                })
                .collect();
            let _ = row_group_stats(&junk, "layer");
        }
    }

    #[test]
    fn footer_length_reads_the_tail() {
        let mut tail = 1234u32.to_le_bytes().to_vec();
        tail.extend_from_slice(b"PAR1");
        assert_eq!(footer_length(&tail).unwrap(), 1234);
        tail[7] = b'E';
        assert!(footer_length(&tail).is_err());
        assert!(footer_length(b"PAR1").is_err());
    }
}
