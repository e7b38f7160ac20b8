//! A `Native` block decoder for the types the encoder writes: the check on
//! [`crate::native`]'s output (round-trip tests and the `native_roundtrip`
//! fuzz target), never on the insert path. Bounded: a length from the input
//! is never trusted beyond the bytes that remain.

use crate::native::get_uuid;

/// One decoded value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Uuid([u8; 16]),
    Str(Vec<u8>),
    Int(i64),
    UInt(u64),
    Float(f64),
    Null,
}

/// A decoded block: its columns in order, each `(name, type, values)`.
#[derive(Debug, Clone, PartialEq)]
pub struct Block {
    pub rows: usize,
    pub columns: Vec<(String, String, Vec<Value>)>,
}

/// Why a block could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("block ends early")]
    Truncated,
    #[error("unsupported column type `{0}`")]
    Type(String),
    #[error("bytes left after the block")]
    Trailing,
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.0.len() {
            return Err(DecodeError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn varuint(&mut self) -> Result<u64, DecodeError> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.take(1)?[0];
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(DecodeError::Truncated)
    }

    /// A length that must fit in what remains.
    fn len(&mut self) -> Result<usize, DecodeError> {
        let n = usize::try_from(self.varuint()?).map_err(|_| DecodeError::Truncated)?;
        if n > self.0.len() {
            return Err(DecodeError::Truncated);
        }
        Ok(n)
    }

    fn string(&mut self) -> Result<Vec<u8>, DecodeError> {
        let n = self.len()?;
        Ok(self.take(n)?.to_vec())
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }
}

/// A value of type `ty` (not `Nullable`).
fn value(r: &mut Reader<'_>, ty: &str) -> Result<Value, DecodeError> {
    Ok(match ty {
        "UUID" => Value::Uuid(get_uuid(&r.fixed::<16>()?)),
        "String" => Value::Str(r.string()?),
        "Int8" => Value::Int(i64::from(i8::from_le_bytes(r.fixed()?))),
        "Int32" => Value::Int(i64::from(i32::from_le_bytes(r.fixed()?))),
        "Int64" => Value::Int(i64::from_le_bytes(r.fixed()?)),
        "UInt16" => Value::UInt(u64::from(u16::from_le_bytes(r.fixed()?))),
        "UInt32" | "DateTime" => Value::UInt(u64::from(u32::from_le_bytes(r.fixed()?))),
        "Float64" => Value::Float(f64::from_le_bytes(r.fixed()?)),
        t if t.starts_with("Enum8(") => Value::Int(i64::from(i8::from_le_bytes(r.fixed()?))),
        other => return Err(DecodeError::Type(other.to_string())),
    })
}

/// Decodes one block, which must be all of `bytes`.
pub fn decode_block(bytes: &[u8]) -> Result<Block, DecodeError> {
    let mut r = Reader(bytes);
    let columns = r.varuint()?;
    let rows = usize::try_from(r.varuint()?).map_err(|_| DecodeError::Truncated)?;
    let mut out = Block {
        rows,
        columns: Vec::new(),
    };
    for _ in 0..columns {
        let name = String::from_utf8_lossy(&r.string()?).into_owned();
        let ty = String::from_utf8_lossy(&r.string()?).into_owned();
        // Every value takes at least a byte: more rows than bytes is a lie.
        if rows > r.0.len() {
            return Err(DecodeError::Truncated);
        }
        let mut values = Vec::with_capacity(rows);
        match ty
            .strip_prefix("Nullable(")
            .and_then(|t| t.strip_suffix(')'))
        {
            Some(inner) => {
                let nulls = r.take(rows)?;
                for &null in nulls {
                    let v = value(&mut r, inner)?;
                    values.push(if null == 1 { Value::Null } else { v });
                }
            }
            None => {
                for _ in 0..rows {
                    values.push(value(&mut r, &ty)?);
                }
            }
        }
        out.columns.push((name, ty, values));
    }
    if !r.0.is_empty() {
        return Err(DecodeError::Trailing);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::{put_str, put_uuid, put_varuint};

    #[test]
    fn decodes_what_the_encoder_writes_and_refuses_lies() {
        let mut b = Vec::new();
        put_varuint(&mut b, 2);
        put_varuint(&mut b, 2);
        put_str(&mut b, "id");
        put_str(&mut b, "UUID");
        put_uuid(&mut b, &[1; 16]);
        put_uuid(&mut b, &[2; 16]);
        put_str(&mut b, "x");
        put_str(&mut b, "Nullable(Float64)");
        b.extend_from_slice(&[0, 1]);
        b.extend_from_slice(&1.5f64.to_le_bytes());
        b.extend_from_slice(&0f64.to_le_bytes());
        let block = decode_block(&b).unwrap();
        assert_eq!(block.rows, 2);
        assert_eq!(
            block.columns[0].2,
            [Value::Uuid([1; 16]), Value::Uuid([2; 16])]
        );
        assert_eq!(block.columns[1].2, [Value::Float(1.5), Value::Null]);
        assert_eq!(decode_block(&b[..b.len() - 1]), Err(DecodeError::Truncated));
        let mut more = b.clone();
        more.push(0);
        assert_eq!(decode_block(&more), Err(DecodeError::Trailing));
        // A row count far beyond the bytes is refused, not allocated.
        let mut lie = Vec::new();
        put_varuint(&mut lie, 1);
        put_varuint(&mut lie, u64::MAX >> 1);
        put_str(&mut lie, "s");
        put_str(&mut lie, "String");
        assert_eq!(decode_block(&lie), Err(DecodeError::Truncated));
    }
}
