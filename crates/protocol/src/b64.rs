//! Base64 as browsers and web-push libraries actually write it.
//!
//! Keys arrive as base64url without padding (what `PushSubscription.toJSON()`
//! gives), but clients also send padded base64url or standard base64. Decoding
//! accepts all of these; encoding always writes base64url without padding.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::Engine as _;

const LENIENT: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const URL_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);
const STD_LENIENT: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);

/// The input was not base64 in any of the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not valid base64url or base64")]
pub struct DecodeError;

/// Decodes base64url or standard base64, padded or not, surrounding white
/// space ignored. Mixing the two alphabets is an error.
pub fn decode(input: &str) -> Result<Vec<u8>, DecodeError> {
    let s = input.trim();
    let url = s.contains(['-', '_']);
    let std = s.contains(['+', '/']);
    let engine = match (url, std) {
        (true, true) => return Err(DecodeError),
        (false, true) => &STD_LENIENT,
        _ => &URL_LENIENT,
    };
    engine.decode(s).map_err(|_| DecodeError)
}

/// Encodes as base64url without padding.
pub fn encode(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_form_clients_send() {
        let bytes = [0xfb, 0xff, 0xfe, 0x01];
        for form in ["-__-AQ", "-__-AQ==", "+//+AQ", "+//+AQ==", " -__-AQ\n"] {
            assert_eq!(decode(form).unwrap(), bytes, "{form}");
        }
        assert_eq!(encode(bytes), "-__-AQ");
    }

    #[test]
    fn refuses_mixed_alphabets_and_garbage() {
        assert_eq!(decode("-_+/"), Err(DecodeError));
        assert_eq!(decode("a*b"), Err(DecodeError));
        assert_eq!(decode("A"), Err(DecodeError));
    }
}
