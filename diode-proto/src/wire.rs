//! A bounds-checked big-endian reader shared by the formats that are not fixed-layout views.

/// Why a variable-layout body (records, beacon) failed to parse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("body ends in the middle of a field")]
    Truncated,
    #[error("{what} is {len} bytes, more than the limit of {max}")]
    TooLong { what: &'static str, len: usize, max: usize },
    #[error("{what} count {count} is out of range")]
    BadCount { what: &'static str, count: usize },
    #[error("{what} is not valid UTF-8")]
    NotUtf8 { what: &'static str },
    #[error("unknown {what} flags {flags:#04x}")]
    BadFlags { what: &'static str, flags: u8 },
    #[error("{what} is out of range")]
    BadValue { what: &'static str },
    #[error("unknown record kind {kind}")]
    UnknownRecord { kind: u8 },
    #[error("{len} bytes left over after the last field")]
    TrailingBytes { len: usize },
}

/// Reads fields from a byte slice, never past its end.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes }
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub fn bytes(&mut self, len: usize) -> Result<&'a [u8], WireError> {
        if len > self.bytes.len() {
            return Err(WireError::Truncated);
        }
        let (head, tail) = self.bytes.split_at(len);
        self.bytes = tail;
        Ok(head)
    }

    pub fn array<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }

    pub fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.array::<1>()?[0])
    }
    pub fn u16(&mut self) -> Result<u16, WireError> {
        Ok(u16::from_be_bytes(self.array()?))
    }
    pub fn u32(&mut self) -> Result<u32, WireError> {
        Ok(u32::from_be_bytes(self.array()?))
    }
    pub fn u64(&mut self) -> Result<u64, WireError> {
        Ok(u64::from_be_bytes(self.array()?))
    }
    pub fn i64(&mut self) -> Result<i64, WireError> {
        Ok(i64::from_be_bytes(self.array()?))
    }

    /// Fails unless every byte was consumed.
    pub fn finish(&self) -> Result<(), WireError> {
        match self.bytes.len() {
            0 => Ok(()),
            len => Err(WireError::TrailingBytes { len }),
        }
    }
}
