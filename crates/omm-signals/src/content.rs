//! Content types: what a piece of content is (photo, video, url, text).

use std::fmt;
use std::str::FromStr;

use crate::SignalError;

/// The kind of a piece of content, named exactly as python-threatexchange (`photo`, `video`,
/// `url`, `text`). These names are storage keys shared with Open Media Match.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ContentType {
    /// Still images.
    Photo,
    /// Videos (and animated images).
    Video,
    /// URLs.
    Url,
    /// Plain text.
    Text,
}

impl ContentType {
    /// All content types.
    pub const ALL: [ContentType; 4] = [
        ContentType::Photo,
        ContentType::Video,
        ContentType::Url,
        ContentType::Text,
    ];

    /// The canonical name.
    pub fn name(self) -> &'static str {
        match self {
            ContentType::Photo => "photo",
            ContentType::Video => "video",
            ContentType::Url => "url",
            ContentType::Text => "text",
        }
    }

    /// Guesses the content type from a file extension (case-insensitive, without the dot).
    /// Still GIFs are photos here (only their first frame is hashed).
    pub fn from_extension(ext: &str) -> Option<ContentType> {
        match ext.to_ascii_lowercase().as_str() {
            "jpg" | "jpeg" | "jpe" | "jfif" | "png" | "gif" | "webp" | "bmp" | "tif" | "tiff" => {
                Some(ContentType::Photo)
            }
            "mp4" | "m4v" | "mov" | "avi" | "mkv" | "webm" | "wmv" | "flv" | "mpg" | "mpeg"
            | "3gp" | "ts" => Some(ContentType::Video),
            "url" => Some(ContentType::Url),
            "txt" | "text" => Some(ContentType::Text),
            _ => None,
        }
    }

    /// The signal types that apply to this content type.
    pub fn signal_types(self) -> impl Iterator<Item = crate::SignalType> {
        crate::SignalType::ALL
            .into_iter()
            .filter(move |s| s.content_types().contains(&self))
    }
}

impl fmt::Display for ContentType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for ContentType {
    type Err = SignalError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ContentType::ALL
            .into_iter()
            .find(|c| c.name() == s)
            .ok_or_else(|| SignalError::UnknownName(s.to_string()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in ContentType::ALL {
            assert_eq!(c.name().parse::<ContentType>().unwrap(), c);
        }
        assert!("Photo".parse::<ContentType>().is_err());
        assert_eq!(ContentType::from_extension("JPG"), Some(ContentType::Photo));
        assert_eq!(ContentType::from_extension("exe"), None);
    }
}
