//! A model's request schema: derived from the graph's inputs and outputs, tightened by its card.

use std::collections::HashSet;

use anyhow::{bail, ensure, Context};

use super::card::{ModelCard, UnknownCategory};

/// Element types ml-api can feed to a graph input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ElementType {
    String,
    Float32,
    Float64,
    Int64,
    Int32,
    Bool,
}

impl ElementType {
    pub fn is_numeric(self) -> bool {
        matches!(
            self,
            Self::Float32 | Self::Float64 | Self::Int64 | Self::Int32
        )
    }

    pub fn is_float(self) -> bool {
        matches!(self, Self::Float32 | Self::Float64)
    }

    /// JSON-schema type of a value of this element type.
    pub fn json_type(self) -> &'static str {
        match self {
            Self::String => "string",
            Self::Float32 | Self::Float64 => "number",
            Self::Int64 | Self::Int32 => "integer",
            Self::Bool => "boolean",
        }
    }

    pub fn onnx_name(self) -> &'static str {
        match self {
            Self::String => "tensor(string)",
            Self::Float32 => "tensor(float)",
            Self::Float64 => "tensor(double)",
            Self::Int64 => "tensor(int64)",
            Self::Int32 => "tensor(int32)",
            Self::Bool => "tensor(bool)",
        }
    }
}

/// A graph input as the backend reports it: `[N]` or `[N, 1]`, one value per record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    pub name: String,
    pub element: ElementType,
    /// 1 for `[N]`, 2 for `[N, 1]`.
    pub rank: usize,
}

/// A graph output that holds one row of scores per record (`[N, K]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputSpec {
    pub name: String,
    /// K when the graph states it.
    pub width: Option<usize>,
}

/// One request field: its graph input plus the card's rules.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub element: ElementType,
    pub description: Option<String>,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub nullable: bool,
    /// Categories in the card's order (for documentation).
    pub categories: Vec<String>,
    /// Set only when unknown categories are rejected; looked up for every string a request
    /// sends, hence foldhash (the categories come from the model's own card).
    pub allowed: Option<HashSet<String, foldhash::fast::RandomState>>,
}

#[derive(Debug, Clone)]
pub struct ModelSchema {
    /// Fields in graph-input order.
    pub fields: Vec<Field>,
    pub output: String,
    pub labels: Vec<String>,
}

impl ModelSchema {
    /// The position of field `name`, looked for at `hint` first: clients (the Flask
    /// prediction API's, tritonclient, ml-api's own metadata) send fields in the schema's
    /// order, so the hint is almost always right and the lookup one comparison.
    pub fn field_index(&self, name: &str, hint: usize) -> Option<usize> {
        match self.fields.get(hint) {
            Some(field) if field.name == name => Some(hint),
            _ => self.fields.iter().position(|field| field.name == name),
        }
    }

    /// Combines the graph's signature with the card, refusing cards that contradict the graph.
    pub fn build(
        inputs: &[InputSpec],
        outputs: &[OutputSpec],
        card: &ModelCard,
    ) -> anyhow::Result<Self> {
        ensure!(!inputs.is_empty(), "the graph has no inputs");
        for name in card.fields.keys() {
            ensure!(
                inputs.iter().any(|input| &input.name == name),
                "card.json describes field `{name}`, which is not a graph input"
            );
        }
        let fields = inputs
            .iter()
            .map(|input| field_from(input, card))
            .collect::<anyhow::Result<Vec<_>>>()?;

        let output = match &card.output {
            Some(name) => outputs
                .iter()
                .find(|output| &output.name == name)
                .with_context(|| format!("card.json names output `{name}`, which the graph does not produce as a float [N, K] tensor"))?,
            None => outputs
                .first()
                .context("the graph has no float [N, K] output to serve")?,
        };
        if let (Some(width), false) = (output.width, card.labels.is_empty()) {
            ensure!(
                width == card.labels.len(),
                "card.json has {} labels but output `{}` has {width} columns",
                card.labels.len(),
                output.name
            );
        }
        Ok(Self {
            fields,
            output: output.name.clone(),
            labels: card.labels.clone(),
        })
    }
}

fn field_from(input: &InputSpec, card: &ModelCard) -> anyhow::Result<Field> {
    let rules = card.fields.get(&input.name).cloned().unwrap_or_default();
    let name = &input.name;
    if rules.min.is_some() || rules.max.is_some() {
        ensure!(
            input.element.is_numeric(),
            "field `{name}`: min/max apply to numeric inputs only"
        );
    }
    if let (Some(min), Some(max)) = (rules.min, rules.max) {
        ensure!(min <= max, "field `{name}`: min {min} is above max {max}");
    }
    if rules.nullable && !input.element.is_float() {
        bail!("field `{name}`: only float inputs can be nullable (null is passed as NaN)");
    }
    let categories = rules.categories.unwrap_or_default();
    if !categories.is_empty() {
        ensure!(
            input.element == ElementType::String,
            "field `{name}`: categories apply to string inputs only"
        );
    }
    let allowed =
        (rules.unknown == UnknownCategory::Reject).then(|| categories.iter().cloned().collect());
    if allowed.is_some() {
        ensure!(
            !categories.is_empty(),
            "field `{name}`: `unknown: reject` needs a list of categories"
        );
    }
    Ok(Field {
        name: name.clone(),
        element: input.element,
        description: rules.description,
        min: rules.min,
        max: rules.max,
        nullable: rules.nullable,
        categories,
        allowed,
    })
}
