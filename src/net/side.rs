//! Which side of a connection a [`Stream`](crate::net::Stream) handle may use: both (the stream
//! itself), or one of the two halves [`into_split`](crate::net::Stream::into_split) makes.
//!
//! A half is the same type as the stream with another side marker, so every method is written
//! once, for every handle that may use it: reads for [`Both`] and [`Read`], writes for [`Both`]
//! and [`Write`], addresses for all three. The markers are types only (they have no values).

/// A side marker: [`Both`], [`Read`] or [`Write`]. Sealed.
pub trait Side: sealed::Sealed + 'static {}

/// The sides that may read: [`Both`] and [`Read`].
pub trait Reads: Side {}

/// The sides that may write: [`Both`] and [`Write`].
pub trait Writes: Side {}

pub(crate) mod sealed {
    /// Out of the public API.
    pub trait Sealed {
        /// The side's name in `Debug` output.
        const NAME: &'static str;
    }
}

/// A whole stream: reads and writes ([`TcpStream`](crate::net::TcpStream),
/// [`UnixStream`](crate::net::UnixStream)).
#[derive(Debug)]
pub enum Both {}

/// A stream's read half ([`OwnedReadHalf`](crate::net::OwnedReadHalf)).
#[derive(Debug)]
pub enum Read {}

/// A stream's write half ([`OwnedWriteHalf`](crate::net::OwnedWriteHalf)).
#[derive(Debug)]
pub enum Write {}

impl sealed::Sealed for Both {
    const NAME: &'static str = "both";
}
impl sealed::Sealed for Read {
    const NAME: &'static str = "read";
}
impl sealed::Sealed for Write {
    const NAME: &'static str = "write";
}
impl Side for Both {}
impl Side for Read {}
impl Side for Write {}
impl Reads for Both {}
impl Reads for Read {}
impl Writes for Both {}
impl Writes for Write {}
