//! Value codecs: how a value becomes the bytes inside an entry's envelope.
//!
//! The default is [`Json`]. A codec works through [`erased_serde`] so that it
//! can be stored in a [`Cache`](crate::Cache) as a trait object and still encode
//! any `T: Serialize`.
//!
//! ```
//! use cache_runtime::codec::{erased_serde, Codec, CodecError};
//!
//! /// JSON, but pretty-printed (for a cache you read by hand).
//! struct PrettyJson;
//!
//! impl Codec for PrettyJson {
//!     fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, CodecError> {
//!         Ok(serde_json::to_vec_pretty(value)?)
//!     }
//!     fn decode(
//!         &self,
//!         bytes: &[u8],
//!         visit: &mut dyn FnMut(&mut dyn erased_serde::Deserializer<'_>) -> Result<(), erased_serde::Error>,
//!     ) -> Result<(), CodecError> {
//!         let mut de = serde_json::Deserializer::from_slice(bytes);
//!         visit(&mut <dyn erased_serde::Deserializer>::erase(&mut de))?;
//!         de.end()?;
//!         Ok(())
//!     }
//! }
//! # let _ = cache_runtime::Cache::builder().codec(PrettyJson);
//! ```

pub use erased_serde;

/// The error a codec reports.
pub type CodecError = Box<dyn std::error::Error + Send + Sync>;

/// Turns values into bytes and back.
pub trait Codec: Send + Sync + 'static {
    /// Encodes one value.
    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, CodecError>;

    /// Decodes `bytes` by handing a deserializer over them to `visit`, and
    /// checks that nothing follows the value.
    fn decode(
        &self,
        bytes: &[u8],
        visit: &mut dyn FnMut(
            &mut dyn erased_serde::Deserializer<'_>,
        ) -> Result<(), erased_serde::Error>,
    ) -> Result<(), CodecError>;
}

/// The default codec: `serde_json`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

impl Codec for Json {
    fn encode(&self, value: &dyn erased_serde::Serialize) -> Result<Vec<u8>, CodecError> {
        Ok(serde_json::to_vec(value)?)
    }

    fn decode(
        &self,
        bytes: &[u8],
        visit: &mut dyn FnMut(
            &mut dyn erased_serde::Deserializer<'_>,
        ) -> Result<(), erased_serde::Error>,
    ) -> Result<(), CodecError> {
        let mut de = serde_json::Deserializer::from_slice(bytes);
        visit(&mut <dyn erased_serde::Deserializer>::erase(&mut de))?;
        de.end()?;
        Ok(())
    }
}

/// The codec a cache uses: the built-in JSON, called directly (no dynamic
/// dispatch per field), or a custom [`Codec`] through `erased_serde`.
pub(crate) enum ValueCodec {
    Json,
    Custom(Box<dyn Codec>),
}

impl ValueCodec {
    pub(crate) fn encode<T: serde::Serialize>(&self, value: &T) -> Result<Vec<u8>, CodecError> {
        match self {
            ValueCodec::Json => Ok(serde_json::to_vec(value)?),
            ValueCodec::Custom(codec) => codec.encode(value),
        }
    }

    pub(crate) fn decode<T: serde::de::DeserializeOwned>(
        &self,
        bytes: &[u8],
    ) -> Result<T, CodecError> {
        match self {
            ValueCodec::Json => Ok(serde_json::from_slice(bytes)?),
            ValueCodec::Custom(codec) => {
                let mut out = None;
                codec.decode(bytes, &mut |de| {
                    out = Some(erased_serde::deserialize::<T>(de)?);
                    Ok(())
                })?;
                out.ok_or_else(|| "the codec produced no value".into())
            }
        }
    }
}
