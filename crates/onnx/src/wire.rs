//! The protocol-buffer wire format, by hand: base-128 varints, field tags, fixed 32-bit values
//! and length-delimited fields (strings, bytes, packed arrays, nested messages).
//!
//! Nested messages are written in place: their length is found first by running the same
//! writer in counting mode (no bytes stored), so a large tensor is never copied into a
//! temporary buffer per nesting level.

use crate::error::{OnnxError, Result};

/// Wire type of varint fields (`int32`, `int64`, `enum`, `bool`).
pub const WIRE_VARINT: u8 = 0;
/// Wire type of 64-bit fixed fields (`double`, `fixed64`).
pub const WIRE_I64: u8 = 1;
/// Wire type of length-delimited fields (strings, bytes, messages, packed arrays).
pub const WIRE_LEN: u8 = 2;
/// Wire type of 32-bit fixed fields (`float`, `fixed32`).
pub const WIRE_I32: u8 = 5;

/// Appends `v` as a base-128 varint (7 bits per byte, least significant group first).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Bytes [`put_varint`] writes for `v` (1 to 10).
pub fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// A message that can write itself as protobuf fields.
pub trait Message {
    /// Writes this message's fields (without a tag or length of its own).
    fn write(&self, w: &mut Writer);

    /// The encoded size of [`Message::write`]'s output.
    fn encoded_len(&self) -> usize {
        let mut w = Writer::counting();
        self.write(&mut w);
        w.len()
    }

    /// This message as bytes.
    fn encode(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(self.encoded_len());
        self.write(&mut w);
        w.into_bytes()
    }
}

/// Writes protobuf fields into a byte buffer, or only counts their size.
#[derive(Debug, Default)]
pub struct Writer {
    buf: Vec<u8>,
    counted: usize,
    counting: bool,
}

impl Writer {
    /// An empty writer.
    pub fn new() -> Writer {
        Writer::default()
    }

    /// An empty writer with room for `n` bytes.
    pub fn with_capacity(n: usize) -> Writer {
        Writer {
            buf: Vec::with_capacity(n),
            ..Writer::default()
        }
    }

    /// A writer that stores nothing and only adds up sizes.
    pub fn counting() -> Writer {
        Writer {
            counting: true,
            ..Writer::default()
        }
    }

    /// Bytes written (or counted) so far.
    pub fn len(&self) -> usize {
        if self.counting {
            self.counted
        } else {
            self.buf.len()
        }
    }

    /// Whether nothing has been written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The bytes written (empty for a counting writer).
    pub fn into_bytes(self) -> Vec<u8> {
        self.buf
    }

    fn raw_varint(&mut self, v: u64) {
        if self.counting {
            self.counted += varint_len(v);
        } else {
            put_varint(&mut self.buf, v);
        }
    }

    fn raw(&mut self, b: &[u8]) {
        if self.counting {
            self.counted += b.len();
        } else {
            self.buf.extend_from_slice(b);
        }
    }

    /// A field key: `(field << 3) | wire_type`.
    pub fn tag(&mut self, field: u32, wire: u8) {
        self.raw_varint(((field as u64) << 3) | wire as u64);
    }

    /// A varint field holding `v` (negative values take ten bytes, as protobuf's `int64`).
    pub fn int(&mut self, field: u32, v: i64) {
        self.tag(field, WIRE_VARINT);
        self.raw_varint(v as u64);
    }

    /// A `float` field (fixed 32 bits, little-endian).
    pub fn float(&mut self, field: u32, v: f32) {
        self.tag(field, WIRE_I32);
        self.raw(&v.to_le_bytes());
    }

    /// A `bytes` field.
    pub fn bytes(&mut self, field: u32, b: &[u8]) {
        self.tag(field, WIRE_LEN);
        self.raw_varint(b.len() as u64);
        self.raw(b);
    }

    /// A `string` field.
    pub fn string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    /// A `bytes` field made of `n` items of `size` bytes each, written by `f` one at a time
    /// (raw tensor data without an intermediate buffer).
    pub fn bytes_from<T: Copy, const N: usize>(
        &mut self,
        field: u32,
        items: &[T],
        f: impl Fn(T) -> [u8; N],
    ) {
        self.tag(field, WIRE_LEN);
        self.raw_varint((items.len() * N) as u64);
        if self.counting {
            self.counted += items.len() * N;
        } else {
            self.buf.reserve(items.len() * N);
            for &x in items {
                self.buf.extend_from_slice(&f(x));
            }
        }
    }

    /// A packed repeated `float` field.
    pub fn packed_floats(&mut self, field: u32, v: &[f32]) {
        self.bytes_from(field, v, f32::to_le_bytes);
    }

    /// A packed repeated `int64` field.
    pub fn packed_ints(&mut self, field: u32, v: &[i64]) {
        self.tag(field, WIRE_LEN);
        let n: usize = v.iter().map(|&x| varint_len(x as u64)).sum();
        self.raw_varint(n as u64);
        for &x in v {
            self.raw_varint(x as u64);
        }
    }

    /// A nested message field.
    pub fn message(&mut self, field: u32, m: &dyn Message) {
        self.tag(field, WIRE_LEN);
        self.raw_varint(m.encoded_len() as u64);
        m.write(self);
    }
}

/// One field's value as read from the wire.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Field<'a> {
    /// A varint.
    Varint(u64),
    /// A fixed 64-bit value.
    I64(u64),
    /// A length-delimited value.
    Len(&'a [u8]),
    /// A fixed 32-bit value.
    I32(u32),
}

/// Reads the fields of one protobuf message in order.
#[derive(Clone, Debug)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    /// A reader over one message's bytes.
    pub fn new(buf: &'a [u8]) -> Reader<'a> {
        Reader::at(buf, 0)
    }

    /// A reader over a nested message that starts at `base` in the outermost buffer (for
    /// error offsets).
    pub fn at(buf: &'a [u8], base: usize) -> Reader<'a> {
        Reader { buf, pos: 0, base }
    }

    /// Offset of the next byte, counted from the outermost buffer.
    pub fn offset(&self) -> usize {
        self.base + self.pos
    }

    /// A decode error at the current offset.
    pub fn error(&self, detail: impl Into<String>) -> OnnxError {
        OnnxError::Decode {
            offset: self.offset(),
            detail: detail.into(),
        }
    }

    /// Reads a varint (at most ten bytes; the tenth may only carry the top bit).
    pub fn varint(&mut self) -> Result<u64> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(self.error("truncated varint"));
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(self.error("varint longer than 64 bits"));
            }
            v |= ((b & 0x7f) as u64) << (7 * i);
            if b < 0x80 {
                return Ok(v);
            }
        }
        Err(self.error("varint longer than ten bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if self.buf.len() - self.pos < n {
            return Err(self.error(format!(
                "field of {n} bytes runs past the end ({} left)",
                self.buf.len() - self.pos
            )));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    /// The next field as (field number, offset of its value, value), or `None` at the end.
    pub fn next_field(&mut self) -> Result<Option<(u32, usize, Field<'a>)>> {
        if self.pos >= self.buf.len() {
            return Ok(None);
        }
        let key = self.varint()?;
        let field = key >> 3;
        if field == 0 || field > u32::MAX as u64 >> 3 {
            return Err(self.error(format!("invalid field number {field}")));
        }
        let at = self.offset();
        let value = match (key & 7) as u8 {
            WIRE_VARINT => Field::Varint(self.varint()?),
            WIRE_I64 => {
                let b = self.take(8)?;
                Field::I64(u64::from_le_bytes(b.try_into().unwrap_or([0; 8])))
            }
            WIRE_LEN => {
                let n = self.varint()?;
                let n = usize::try_from(n).map_err(|_| self.error("length too large"))?;
                let at = self.offset();
                let b = self.take(n)?;
                return Ok(Some((field as u32, at, Field::Len(b))));
            }
            WIRE_I32 => {
                let b = self.take(4)?;
                Field::I32(u32::from_le_bytes(b.try_into().unwrap_or([0; 4])))
            }
            w => return Err(self.error(format!("unsupported wire type {w} (field {field})"))),
        };
        Ok(Some((field as u32, at, value)))
    }
}

/// Reads a repeated `int64` field's element(s): one varint, or a packed run.
pub fn read_ints(f: Field<'_>, at: usize, out: &mut Vec<i64>) -> Result<()> {
    match f {
        Field::Varint(v) => out.push(v as i64),
        Field::Len(b) => {
            let mut r = Reader::at(b, at);
            while r.pos < b.len() {
                out.push(r.varint()? as i64);
            }
        }
        _ => {
            return Err(OnnxError::Decode {
                offset: at,
                detail: "an int64 field with a fixed-size wire type".into(),
            })
        }
    }
    Ok(())
}

/// Reads a repeated `float` field's element(s): one fixed32, or a packed run.
pub fn read_floats(f: Field<'_>, at: usize, out: &mut Vec<f32>) -> Result<()> {
    match f {
        Field::I32(v) => out.push(f32::from_bits(v)),
        Field::Len(b) if b.len() % 4 == 0 => out.extend(
            b.chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        _ => {
            return Err(OnnxError::Decode {
                offset: at,
                detail: "a float field that is neither fixed32 nor a packed run of them".into(),
            })
        }
    }
    Ok(())
}

/// A field's value as UTF-8 text.
pub fn read_string(f: Field<'_>, at: usize) -> Result<String> {
    match f {
        Field::Len(b) => String::from_utf8(b.to_vec()).map_err(|_| OnnxError::Decode {
            offset: at,
            detail: "a string field that is not UTF-8".into(),
        }),
        _ => Err(OnnxError::Decode {
            offset: at,
            detail: "a string field with a non-length-delimited wire type".into(),
        }),
    }
}

/// A varint field's value.
pub fn read_varint(f: Field<'_>, at: usize) -> Result<u64> {
    match f {
        Field::Varint(v) => Ok(v),
        _ => Err(OnnxError::Decode {
            offset: at,
            detail: "expected a varint field".into(),
        }),
    }
}

/// A length-delimited field's bytes.
pub fn read_bytes<'a>(f: Field<'a>, at: usize) -> Result<&'a [u8]> {
    match f {
        Field::Len(b) => Ok(b),
        _ => Err(OnnxError::Decode {
            offset: at,
            detail: "expected a length-delimited field".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn varint(v: u64) -> Vec<u8> {
        let mut b = Vec::new();
        put_varint(&mut b, v);
        b
    }

    #[test]
    fn varint_edge_cases() {
        assert_eq!(varint(0), [0x00]);
        assert_eq!(varint(1), [0x01]);
        assert_eq!(varint(127), [0x7f]);
        assert_eq!(varint(128), [0x80, 0x01]);
        assert_eq!(varint(150), [0x96, 0x01]);
        assert_eq!(varint(300), [0xac, 0x02]);
        assert_eq!(varint(16383), [0xff, 0x7f]);
        assert_eq!(varint(16384), [0x80, 0x80, 0x01]);
        assert_eq!(varint(u32::MAX as u64), [0xff, 0xff, 0xff, 0xff, 0x0f]);
        // int64 -1 is ten bytes: nine 0xff and a final 0x01
        let mut m1 = vec![0xff; 9];
        m1.push(0x01);
        assert_eq!(varint(-1i64 as u64), m1);
        assert_eq!(varint(u64::MAX), m1);
        for v in [0, 1, 127, 128, 300, 1 << 35, u64::MAX, -2i64 as u64] {
            assert_eq!(varint_len(v), varint(v).len(), "{v}");
            let b = varint(v);
            assert_eq!(Reader::new(&b).varint().unwrap(), v);
        }
    }

    #[test]
    fn bad_varints_are_errors() {
        assert!(Reader::new(&[0x80]).varint().is_err());
        assert!(Reader::new(&[0xff; 11]).varint().is_err());
        let mut b = vec![0xff; 9];
        b.push(0x02);
        assert!(Reader::new(&b).varint().is_err());
    }

    #[test]
    fn fields_by_hand() {
        let mut w = Writer::new();
        w.int(1, 150);
        w.string(2, "testing");
        w.float(3, 1.0);
        w.packed_ints(4, &[3, 270, 86942]);
        w.int(5, -1);
        let b = w.into_bytes();
        let mut want = vec![0x08, 0x96, 0x01];
        want.extend([0x12, 0x07]);
        want.extend(b"testing");
        want.extend([0x1d, 0x00, 0x00, 0x80, 0x3f]);
        want.extend([0x22, 0x06, 0x03, 0x8e, 0x02, 0x9e, 0xa7, 0x05]);
        want.push(0x28);
        want.extend([0xff; 9]);
        want.push(0x01);
        assert_eq!(b, want);

        let mut r = Reader::new(&b);
        let (f, at, v) = r.next_field().unwrap().unwrap();
        assert_eq!((f, read_varint(v, at).unwrap()), (1, 150));
        let (f, at, v) = r.next_field().unwrap().unwrap();
        assert_eq!((f, read_string(v, at).unwrap().as_str()), (2, "testing"));
        let (_, at, v) = r.next_field().unwrap().unwrap();
        let mut fl = Vec::new();
        read_floats(v, at, &mut fl).unwrap();
        assert_eq!(fl, [1.0]);
        let (_, at, v) = r.next_field().unwrap().unwrap();
        let mut is = Vec::new();
        read_ints(v, at, &mut is).unwrap();
        assert_eq!(is, [3, 270, 86942]);
        let (_, at, v) = r.next_field().unwrap().unwrap();
        read_ints(v, at, &mut is).unwrap();
        assert_eq!(is[3], -1);
        assert!(r.next_field().unwrap().is_none());
    }

    #[test]
    fn counting_writer_matches() {
        struct M;
        impl Message for M {
            fn write(&self, w: &mut Writer) {
                w.int(1, 1 << 40);
                w.packed_floats(2, &[1.0; 300]);
                w.string(3, "x");
            }
        }
        let mut w = Writer::new();
        w.message(7, &M);
        let b = w.into_bytes();
        assert_eq!(M.encoded_len(), M.encode().len());
        // tag 7/LEN, then the length as a varint, then the body
        assert_eq!(b[0], 0x3a);
        assert_eq!(
            b.len(),
            1 + varint_len(M.encoded_len() as u64) + M.encoded_len()
        );
    }

    #[test]
    fn truncated_and_bad_fields_are_errors() {
        // a length that runs past the end
        assert!(Reader::new(&[0x12, 0x05, b'a']).next_field().is_err());
        // wire type 3 (groups) is not supported
        assert!(Reader::new(&[0x0b]).next_field().is_err());
        // field number 0
        assert!(Reader::new(&[0x00, 0x01]).next_field().is_err());
        // a truncated fixed32
        assert!(Reader::new(&[0x1d, 0x00]).next_field().is_err());
    }
}
