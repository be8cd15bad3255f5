//! GGUF metadata: key/value pairs in file order with a key index, and typed getters whose
//! errors name the key, the expected type and the type found.

use std::collections::HashMap;

use super::error::GgufError;
use super::value::{Array, Value};

/// The metadata of a GGUF file, in file order.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Metadata {
    entries: Vec<(String, Value)>,
    index: HashMap<String, usize>,
}

impl Metadata {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries in file order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.index.get(key).and_then(|&i| self.entries.get(i)).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.index.contains_key(key)
    }

    /// Sets `key` to `value`, keeping its position if it exists (else appending), and returns
    /// the old value.
    pub fn insert(&mut self, key: impl Into<String>, value: impl Into<Value>) -> Option<Value> {
        let key = key.into();
        let value = value.into();
        if let Some(&i) = self.index.get(&key) {
            if let Some(entry) = self.entries.get_mut(i) {
                return Some(std::mem::replace(&mut entry.1, value));
            }
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        None
    }

    /// Removes `key`, keeping the order of the others.
    pub fn remove(&mut self, key: &str) -> Option<Value> {
        let i = self.index.remove(key)?;
        let (_, value) = self.entries.remove(i);
        for slot in self.index.values_mut() {
            if *slot > i {
                *slot -= 1;
            }
        }
        Some(value)
    }

    /// Appends a new entry read from a file; a key seen before is an error.
    pub(crate) fn push_new(&mut self, key: String, value: Value) -> Result<(), GgufError> {
        if self.index.contains_key(&key) {
            return Err(GgufError::DuplicateKey { key });
        }
        self.index.insert(key.clone(), self.entries.len());
        self.entries.push((key, value));
        Ok(())
    }

    /// The value of `key`, an error naming the key if it is missing.
    pub fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey { key: key.to_string() })
    }

    fn integer<T: TryFrom<i128>>(&self, key: &str, expected: &'static str) -> Result<Option<T>, GgufError> {
        let Some(value) = self.get(key) else { return Ok(None) };
        value.as_integer().and_then(|i| T::try_from(i).ok()).map(Some).ok_or_else(|| type_error(key, expected, value))
    }

    /// An integer of any type whose value fits a `u32`.
    pub fn get_u32(&self, key: &str) -> Result<Option<u32>, GgufError> {
        self.integer(key, "an integer that fits u32")
    }

    /// An integer of any type whose value fits an `i32`.
    pub fn get_i32(&self, key: &str) -> Result<Option<i32>, GgufError> {
        self.integer(key, "an integer that fits i32")
    }

    /// An integer of any type whose value fits a `u64`.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, GgufError> {
        self.integer(key, "an integer that fits u64")
    }

    /// An integer of any type whose value fits an `i64`.
    pub fn get_i64(&self, key: &str) -> Result<Option<i64>, GgufError> {
        self.integer(key, "an integer that fits i64")
    }

    /// An integer of any type whose value fits a `usize` (sizes, counts, token ids).
    pub fn get_usize(&self, key: &str) -> Result<Option<usize>, GgufError> {
        self.integer(key, "an integer that fits usize")
    }

    /// An `f32`, or an `f64` rounded to `f32`.
    pub fn get_f32(&self, key: &str) -> Result<Option<f32>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some(*v)),
            Some(Value::F64(v)) => Ok(Some(*v as f32)),
            Some(other) => Err(type_error(key, "f32 or f64", other)),
        }
    }

    /// An `f64` or an `f32`.
    pub fn get_f64(&self, key: &str) -> Result<Option<f64>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::F32(v)) => Ok(Some((*v).into())),
            Some(Value::F64(v)) => Ok(Some(*v)),
            Some(other) => Err(type_error(key, "f32 or f64", other)),
        }
    }

    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Bool(v)) => Ok(Some(*v)),
            Some(other) => Err(type_error(key, "bool", other)),
        }
    }

    pub fn get_str(&self, key: &str) -> Result<Option<&str>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(v)) => Ok(Some(v)),
            Some(other) => Err(type_error(key, "string", other)),
        }
    }

    /// An array of any element type.
    pub fn get_array(&self, key: &str) -> Result<Option<&Array>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(v)) => Ok(Some(v)),
            Some(other) => Err(type_error(key, "array", other)),
        }
    }

    pub fn get_str_array(&self, key: &str) -> Result<Option<&[String]>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(Array::String(v))) => Ok(Some(v)),
            Some(other) => Err(type_error(key, "array of strings", other)),
        }
    }

    pub fn get_f32_array(&self, key: &str) -> Result<Option<&[f32]>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(Array::F32(v))) => Ok(Some(v)),
            Some(other) => Err(type_error(key, "array of f32", other)),
        }
    }

    pub fn get_i32_array(&self, key: &str) -> Result<Option<&[i32]>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(Array::I32(v))) => Ok(Some(v)),
            Some(other) => Err(type_error(key, "array of i32", other)),
        }
    }

    pub fn get_u32_array(&self, key: &str) -> Result<Option<&[u32]>, GgufError> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::Array(Array::U32(v))) => Ok(Some(v)),
            Some(other) => Err(type_error(key, "array of u32", other)),
        }
    }
}

fn type_error(key: &str, expected: &'static str, found: &Value) -> GgufError {
    GgufError::MetadataType { key: key.to_string(), expected, actual: found.describe() }
}
