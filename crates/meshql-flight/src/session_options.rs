//! Flight session options (SetSessionOptions / GetSessionOptions / CloseSession), kept by the
//! client as a signed cookie so that any replica can read them.

pub use crate::flight_proto::close_session_result::Status as CloseStatus;
use crate::flight_proto::session_option_value::OptionValue;
pub use crate::flight_proto::set_session_options_result::ErrorValue;
pub use crate::flight_proto::{
    CloseSessionResult, GetSessionOptionsResult, SessionOptionValue, SetSessionOptionsRequest, SetSessionOptionsResult,
};

/// The text of a string-valued option.
pub fn session_option_value(v: &SessionOptionValue) -> Option<&str> {
    match &v.option_value {
        Some(OptionValue::StringValue(s)) => Some(s),
        _ => None,
    }
}

/// A string-valued option.
pub fn string_value(s: &str) -> SessionOptionValue {
    SessionOptionValue {
        option_value: Some(OptionValue::StringValue(s.to_string())),
    }
}

/// A per-option error of SetSessionOptions.
pub fn error(value: ErrorValue) -> crate::flight_proto::set_session_options_result::Error {
    crate::flight_proto::set_session_options_result::Error { value: value as i32 }
}
