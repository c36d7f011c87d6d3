//! The ONNX Runtime backend (`ort`, loading `libonnxruntime.so` at run time).

use std::{
    path::Path,
    sync::{Arc, OnceLock},
};

use anyhow::{anyhow, bail, Context};
use ort::{
    environment::Environment,
    session::{builder::GraphOptimizationLevel, Session, SessionInputValue},
    value::{Tensor, TensorElementType, TensorRef, ValueType},
};

use super::{Backend, InferenceError};
use crate::model::{Column, ElementType, FeatureBatch, InputSpec, OutputSpec, Scores};

/// ONNX Runtime allows one environment per process; every model shares it.
static ENVIRONMENT: OnceLock<Environment> = OnceLock::new();

/// Loads the ONNX Runtime library (once per process) and returns the shared environment.
pub fn environment(dylib: &Path) -> anyhow::Result<&'static Environment> {
    if let Some(env) = ENVIRONMENT.get() {
        return Ok(env);
    }
    if !dylib.is_file() {
        bail!(
            "ONNX Runtime library not found at `{}`: run `scripts/fetch-onnxruntime.sh` \
             (or `make run`), or point --ort-dylib / ORT_DYLIB_PATH at libonnxruntime.so",
            dylib.display()
        );
    }
    let builder = ort::init_from(dylib)
        .map_err(|e| anyhow!("cannot load ONNX Runtime from `{}`: {e}", dylib.display()))?;
    let env = builder
        .with_name("ml-api")
        .with_telemetry(false)
        .build()
        .map_err(|e| anyhow!("cannot create the ONNX Runtime environment: {e}"))?;
    Ok(ENVIRONMENT.get_or_init(|| env))
}

/// Session options shared by every copy of a model.
#[derive(Debug, Clone, Copy)]
pub struct SessionOptions {
    pub intra_op_threads: usize,
}

/// A model's signature, as read from its graph.
#[derive(Debug, Clone)]
pub struct Signature {
    pub inputs: Vec<InputSpec>,
    /// Float outputs shaped `[N, K]`, in graph order.
    pub outputs: Vec<OutputSpec>,
}

pub struct OrtBackend {
    session: Session,
    /// Graph input names and ranks, in the order of [`FeatureBatch::columns`].
    inputs: Arc<[InputSpec]>,
    output: String,
}

impl OrtBackend {
    /// Opens one session over `bytes`.
    pub fn open(
        env: &Environment,
        bytes: &[u8],
        options: SessionOptions,
    ) -> anyhow::Result<(Session, Signature)> {
        let configure = |e: ort::Error<_>| anyhow!("cannot configure an ONNX Runtime session: {e}");
        let session = Session::builder(env)
            .map_err(|e| anyhow!("cannot create an ONNX Runtime session: {e}"))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(configure)?
            .with_intra_threads(options.intra_op_threads.max(1))
            .map_err(configure)?
            .with_inter_threads(1)
            .map_err(configure)?
            .with_intra_op_spinning(false)
            .map_err(configure)?
            .commit_from_memory(bytes)
            .map_err(|e| anyhow!("ONNX Runtime cannot load the model: {e}"))?;
        let signature = signature(&session)?;
        Ok((session, signature))
    }

    pub fn new(session: Session, inputs: Arc<[InputSpec]>, output: String) -> Self {
        Self {
            session,
            inputs,
            output,
        }
    }
}

fn signature(session: &Session) -> anyhow::Result<Signature> {
    let inputs = session
        .inputs()
        .iter()
        .map(|outlet| input_spec(outlet.name(), outlet.dtype()))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let outputs = session
        .outputs()
        .iter()
        .filter_map(|outlet| match outlet.dtype() {
            ValueType::Tensor {
                ty: TensorElementType::Float32,
                shape,
                ..
            } if shape.len() == 2 => Some(OutputSpec {
                name: outlet.name().to_owned(),
                width: usize::try_from(shape[1]).ok(),
            }),
            _ => None,
        })
        .collect();
    Ok(Signature { inputs, outputs })
}

fn input_spec(name: &str, dtype: &ValueType) -> anyhow::Result<InputSpec> {
    let ValueType::Tensor { ty, shape, .. } = dtype else {
        bail!("input `{name}` is a {dtype}, not a tensor");
    };
    let element = match ty {
        TensorElementType::String => ElementType::String,
        TensorElementType::Float32 => ElementType::Float32,
        TensorElementType::Float64 => ElementType::Float64,
        TensorElementType::Int64 => ElementType::Int64,
        TensorElementType::Int32 => ElementType::Int32,
        TensorElementType::Bool => ElementType::Bool,
        other => bail!("input `{name}` has element type {other}, which ml-api cannot feed"),
    };
    let rank = match **shape {
        [_] => 1,
        [_, 1] | [_, -1] => 2,
        _ => bail!(
            "input `{name}` has shape {dtype}; ml-api feeds one value per record ([N] or [N, 1])"
        ),
    };
    Ok(InputSpec {
        name: name.to_owned(),
        element,
        rank,
    })
}

/// The graph input fed by `column`. Numeric columns are lent to ONNX Runtime as they are;
/// text is copied, because ONNX Runtime keeps its own copy of each string.
fn tensor<'a>(
    column: &'a Column,
    spec: &InputSpec,
    rows: usize,
) -> ort::Result<SessionInputValue<'a>> {
    let shape: Vec<i64> = if spec.rank == 2 {
        vec![rows as i64, 1]
    } else {
        vec![rows as i64]
    };
    Ok(match column {
        Column::String(values) => Tensor::from_string_array((shape, values.as_slice()))?.into(),
        Column::Float32(values) => TensorRef::from_array_view((shape, values.as_slice()))?.into(),
        Column::Float64(values) => TensorRef::from_array_view((shape, values.as_slice()))?.into(),
        Column::Int64(values) => TensorRef::from_array_view((shape, values.as_slice()))?.into(),
        Column::Int32(values) => TensorRef::from_array_view((shape, values.as_slice()))?.into(),
        Column::Bool(values) => TensorRef::from_array_view((shape, values.as_slice()))?.into(),
    })
}

impl Backend for OrtBackend {
    fn run(&mut self, batch: &FeatureBatch) -> Result<Scores, InferenceError> {
        let failed = |e: ort::Error| InferenceError::Failed(e.to_string());
        let mut inputs = Vec::with_capacity(self.inputs.len());
        for (spec, column) in self.inputs.iter().zip(&batch.columns) {
            inputs.push((
                spec.name.as_str(),
                tensor(column, spec, batch.rows).map_err(failed)?,
            ));
        }
        let outputs = self.session.run(inputs).map_err(failed)?;
        let value = outputs
            .get(&self.output)
            .ok_or_else(|| InferenceError::Failed(format!("output `{}` missing", self.output)))?;
        let (shape, values) = value.try_extract_tensor::<f32>().map_err(failed)?;
        let (rows, width) = match **shape {
            [rows, width] => (rows as usize, width as usize),
            _ => {
                return Err(InferenceError::Failed(format!(
                    "output shape {shape:?} is not [N, K]"
                )))
            }
        };
        if rows != batch.rows {
            return Err(InferenceError::Failed(format!(
                "model returned {rows} rows for {} records",
                batch.rows
            )));
        }
        Ok(Scores {
            rows,
            width,
            values: values.to_vec(),
        })
    }
}

/// Reads a model file, with the path in the error.
pub fn read_model(path: &Path) -> anyhow::Result<Vec<u8>> {
    std::fs::read(path).with_context(|| format!("cannot read model file `{}`", path.display()))
}
