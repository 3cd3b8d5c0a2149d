//! Content types, signal types and hashing: bytes in, signals out.
//!
//! This crate knows nothing of storage, indexes or HTTP.
//!
//! * [`ContentType`] and [`SignalType`]: the names shared with python-threatexchange and Open
//!   Media Match (`photo`, `video`, `url`, `text`; `pdq`, `video_md5`, `video_sha256`, `url`,
//!   `url_md5`), validation of serialised signals, distances and default thresholds, and
//!   [`SignalType::hash_bytes`].
//! * [`pdq`]: bit-exact PDQ (hash, quality, dihedral variants) on decoded pixels, with
//!   [`pdq::PdqHash`] and its `[u64; 4]` layout for the index.
//! * [`mod@decode`]: JPEG (libjpeg-turbo pixels), PNG, WebP, GIF, BMP, TIFF to 8-bit pixels, bounded.
//! * [`url`]: `url_md5` normalisation.

#![warn(missing_docs)]

pub mod content;
pub mod decode;
pub mod image;
pub mod pdq;
pub mod signal;
pub mod url;

pub use content::ContentType;
pub use decode::{decode, DecodeError, DecodeOptions, ImageFormat};
pub use image::{Image, Pixels};
pub use pdq::{PdqHash, PdqOutput};
pub use signal::{HashError, HashOptions, Signal, SignalError, SignalType};
