//! Reading `FORMAT RowBinary` answers: fixed-width little-endian numbers,
//! ClickHouse's binary UUIDs and length-prefixed strings, with no escaping to
//! undo. Every read is bounds-checked: an answer cut short is an error, never
//! a panic.

use crate::native::get_uuid;
use crate::Error;

/// A cursor over one `RowBinary` answer.
#[derive(Debug)]
pub struct Rows<'a> {
    bytes: &'a [u8],
}

impl<'a> Rows<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// True when every row has been read.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], Error> {
        if self.bytes.len() < n {
            return Err(Error::Protocol(format!(
                "RowBinary answer ends {} bytes short",
                n - self.bytes.len()
            )));
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Error> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    pub fn u8(&mut self) -> Result<u8, Error> {
        Ok(self.array::<1>()?[0])
    }

    pub fn u16(&mut self) -> Result<u16, Error> {
        Ok(u16::from_le_bytes(self.array()?))
    }

    pub fn u32(&mut self) -> Result<u32, Error> {
        Ok(u32::from_le_bytes(self.array()?))
    }

    pub fn i64(&mut self) -> Result<i64, Error> {
        Ok(i64::from_le_bytes(self.array()?))
    }

    /// A `UUID` column, as RFC 4122 bytes.
    pub fn uuid(&mut self) -> Result<[u8; 16], Error> {
        Ok(get_uuid(&self.array()?))
    }

    /// A `String` column that must be UTF-8.
    pub fn string(&mut self) -> Result<&'a str, Error> {
        let len = self.varuint()?;
        let len = usize::try_from(len)
            .map_err(|_| Error::Protocol(format!("RowBinary string of {len} bytes")))?;
        std::str::from_utf8(self.take(len)?)
            .map_err(|_| Error::Protocol("RowBinary string is not UTF-8".into()))
    }

    /// An `Array(T)` column: its length, then each element read by `item`.
    /// The length is checked against the bytes left (every element takes at
    /// least one), so a corrupt length cannot make this allocate.
    pub fn array_of<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Result<T, Error>,
    ) -> Result<Vec<T>, Error> {
        let len = self.varuint()?;
        if len > self.bytes.len() as u64 {
            return Err(Error::Protocol(format!(
                "RowBinary array of {len} elements in {} bytes",
                self.bytes.len()
            )));
        }
        (0..len).map(|_| item(self)).collect()
    }

    /// LEB128, as ClickHouse writes lengths.
    fn varuint(&mut self) -> Result<u64, Error> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let b = self.u8()?;
            v |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err(Error::Protocol(
            "RowBinary length longer than 64 bits".into(),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::native::{put_str, put_uuid};

    #[test]
    fn reads_what_clickhouse_writes() {
        let id = *uuid::Uuid::new_v4().as_bytes();
        let name = "tab\there, newline\nand \\backslash\\ 'quote' é";
        let mut b = Vec::new();
        put_uuid(&mut b, &id);
        put_str(&mut b, name);
        put_str(&mut b, &"x".repeat(300));
        b.extend_from_slice(&7u16.to_le_bytes());
        b.extend_from_slice(&70_000u32.to_le_bytes());
        b.push(1);
        let mut r = Rows::new(&b);
        assert_eq!(r.uuid().unwrap(), id);
        assert_eq!(r.string().unwrap(), name);
        assert_eq!(r.string().unwrap().len(), 300);
        assert_eq!(r.u16().unwrap(), 7);
        assert_eq!(r.u32().unwrap(), 70_000);
        assert_eq!(r.u8().unwrap(), 1);
        assert!(r.is_empty());
        assert!(r.u8().is_err());
    }

    #[test]
    fn arrays() {
        let mut b = Vec::new();
        crate::native::put_varuint(&mut b, 2);
        put_str(&mut b, "a");
        put_str(&mut b, "bc");
        crate::native::put_varuint(&mut b, 0);
        let mut r = Rows::new(&b);
        assert_eq!(r.array_of(|r| r.string()).unwrap(), ["a", "bc"]);
        assert!(r.array_of(Rows::u32).unwrap().is_empty());
        assert!(r.is_empty());
        let mut huge = Vec::new();
        crate::native::put_varuint(&mut huge, u64::MAX >> 1);
        assert!(Rows::new(&huge).array_of(Rows::u8).is_err());
    }

    #[test]
    fn short_answers_are_errors() {
        let mut b = Vec::new();
        put_str(&mut b, "hello");
        for cut in 0..b.len() {
            assert!(Rows::new(&b[..cut]).string().is_err(), "cut at {cut}");
        }
        assert!(Rows::new(&[0xff; 11]).string().is_err());
        assert!(Rows::new(&[0xff, 0xff, 0xff, 0xff, 0x0f]).string().is_err());
    }
}
