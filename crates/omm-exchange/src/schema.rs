//! Field schemas of exchange configs and credentials, in the shape of
//! `GET /c/exchanges/api/<api>/schema` (`{"fields": [{name, type, required, default, help, choices}]}`).

use serde::Serialize;
use serde_json::Value;

/// The kind of a config or credential field, serialised as HMA does (`string`, `number`,
/// `boolean`, `enum`, `set_of_number`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// A string.
    String,
    /// An integer or float.
    Number,
    /// A boolean.
    Boolean,
    /// One of `choices`.
    Enum,
    /// A set (JSON array without duplicates) of the given element kind.
    SetOf(&'static str),
    /// A list (JSON array) of the given element kind.
    ListOf(&'static str),
}

impl FieldType {
    /// The HMA type string.
    pub fn as_str(&self) -> String {
        match self {
            FieldType::String => "string".into(),
            FieldType::Number => "number".into(),
            FieldType::Boolean => "boolean".into(),
            FieldType::Enum => "enum".into(),
            FieldType::SetOf(kind) => format!("set_of_{kind}"),
            FieldType::ListOf(kind) => format!("list_of_{kind}"),
        }
    }
}

impl Serialize for FieldType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.as_str())
    }
}

/// One field of a config or credentials object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct FieldSchema {
    /// JSON key.
    pub name: &'static str,
    /// Field kind.
    #[serde(rename = "type")]
    pub field_type: FieldType,
    /// True if the field has no default and must be given.
    pub required: bool,
    /// Default value (null if none).
    pub default: Value,
    /// One-line help text for the UI.
    pub help: &'static str,
    /// Allowed values for `enum` fields.
    pub choices: Option<Vec<Value>>,
    /// True for secret values (credentials): a UI renders a password input and never echoes them.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub secret: bool,
}

impl FieldSchema {
    pub(crate) fn required(name: &'static str, field_type: FieldType, help: &'static str) -> Self {
        FieldSchema {
            name,
            field_type,
            required: true,
            default: Value::Null,
            help,
            choices: None,
            secret: false,
        }
    }

    pub(crate) fn optional(
        name: &'static str,
        field_type: FieldType,
        default: Value,
        help: &'static str,
    ) -> Self {
        FieldSchema {
            name,
            field_type,
            required: false,
            default,
            help,
            choices: None,
            secret: false,
        }
    }

    pub(crate) fn with_choices(mut self, choices: Vec<Value>) -> Self {
        self.choices = Some(choices);
        self
    }

    pub(crate) fn secret(mut self) -> Self {
        self.secret = true;
        self
    }
}

/// The fields of a config or credentials object.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
pub struct ObjectSchema {
    /// The fields, in display order.
    pub fields: Vec<FieldSchema>,
}

/// The shared optional `base_url` config field of HTTP-based exchanges.
pub(crate) fn base_url_field() -> FieldSchema {
    FieldSchema::optional(
        "base_url",
        FieldType::String,
        Value::Null,
        "Override of the API base URL (http or https), for proxies, regional endpoints and testing",
    )
}
