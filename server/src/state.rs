//! The typed state every handler shares: the loaded model and the bound on concurrent work.

use crate::error::AppError;
use axum::http::StatusCode;
use candle_core::Tensor;
use std::sync::Arc;
use tokio::sync::Semaphore;
use zfnet::LoadedModel;
use zfvis_api::{Accuracy, ClassInfo, LayerInfo, LayerKind, ModelInfo};

/// Limits on what one client can make the server do.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Inference jobs running at once; more wait for a slot.
    pub max_concurrent_jobs: usize,
    /// How long a request waits for a slot before it gets 503.
    pub queue_timeout: std::time::Duration,
    /// Uploaded images whose forward trace is kept (least recently used first out).
    pub cached_images: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 20 * 1024 * 1024,
            max_concurrent_jobs: 2,
            queue_timeout: std::time::Duration::from_secs(30),
            cached_images: 16,
        }
    }
}

pub struct AppState {
    pub model: Arc<LoadedModel>,
    pub images: crate::images::ImageStore,
    pub info: ModelInfo,
    pub limits: Limits,
    /// The probe set for top-9 views, when the server was started with one.
    pub probes: Option<crate::probes::ProbeSet>,
    pub sweeps: crate::occlusion::Sweeps,
    jobs: Arc<Semaphore>,
}

impl AppState {
    pub fn new(model: LoadedModel, limits: Limits) -> Self {
        let info = model_info(&model);
        AppState {
            images: crate::images::ImageStore::new(limits.cached_images),
            model: Arc::new(model),
            info,
            jobs: Arc::new(Semaphore::new(limits.max_concurrent_jobs)),
            limits,
            probes: None,
            sweeps: Default::default(),
        }
    }

    pub fn with_probes(mut self, probes: crate::probes::ProbeSet) -> Self {
        self.probes = Some(probes);
        self
    }

    pub fn probes(&self) -> Result<&crate::probes::ProbeSet, AppError> {
        self.probes.as_ref().ok_or_else(|| {
            AppError::new(
                StatusCode::NOT_FOUND,
                "no_probe_index",
                "this server has no probe set: start it with --probe DIR for top-9 views (or give ?image=ID)",
            )
        })
    }

    /// Runs CPU-heavy model work on the blocking pool, at most `max_concurrent_jobs` at once.
    pub async fn run_blocking<T, F>(&self, work: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&LoadedModel) -> Result<T, AppError> + Send + 'static,
    {
        let permit =
            tokio::time::timeout(self.limits.queue_timeout, self.jobs.clone().acquire_owned())
                .await
                .map_err(|_| {
                    AppError::new(
                        StatusCode::SERVICE_UNAVAILABLE,
                        "overloaded",
                        "the server is busy with other requests; try again in a moment",
                    )
                })?
                .map_err(|_| AppError::internal("job queue closed"))?;
        let model = self.model.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&model)
        })
        .await
        .map_err(|e| AppError::internal(format!("inference task failed: {e}")))?
    }
}

fn model_info(model: &LoadedModel) -> ModelInfo {
    let net = &model.net;
    let sizes = zfnet::arch::spatial_sizes(net.arch);
    let mut layers: Vec<LayerInfo> = net
        .convs
        .iter()
        .zip(sizes)
        .enumerate()
        .map(|(i, (conv, (side, pooled)))| LayerInfo {
            name: zfnet::model::CONV_NAMES[i].to_string(),
            kind: LayerKind::Conv,
            output_shape: vec![conv.out_channels(), side, side],
            kernel: Some(conv.spec.kernel as u32),
            stride: Some(conv.spec.stride as u32),
            padding: Some(conv.spec.padding as u32),
            pooled_shape: pooled.map(|p| vec![conv.out_channels(), p, p]),
            lrn: conv.spec.lrn,
        })
        .collect();
    for (name, fc) in zfnet::model::FC_NAMES.iter().zip(&net.fcs) {
        layers.push(LayerInfo {
            name: name.to_string(),
            kind: LayerKind::Fc,
            output_shape: vec![fc.weight().dims()[0]],
            kernel: None,
            stride: None,
            padding: None,
            pooled_shape: None,
            lrn: false,
        });
    }
    let m = &model.manifest;
    ModelInfo {
        architecture: net.arch.name().to_string(),
        name: m.name.clone(),
        trained: m.trained,
        provenance: m.provenance.clone(),
        weights_sha256: model.weights_sha256.clone(),
        parameters: net.parameter_count(),
        input_size: zfnet::arch::INPUT_SIZE as u32,
        layers,
        accuracy: m.evaluation.as_ref().map(|e| Accuracy {
            dataset: e.dataset.clone(),
            images: e.images,
            top1: e.top1,
            top5: e.top5,
        }),
        classes: m
            .classes
            .iter()
            .enumerate()
            .map(|(index, c)| ClassInfo {
                index,
                wnid: c.wnid.clone(),
                label: c.label.clone(),
            })
            .collect(),
    }
}

/// An upload made ready for the network, and its tensor on the model's device.
pub fn prepare_input(
    model: &LoadedModel,
    bytes: &[u8],
) -> Result<(zfnet::preprocess::Prepared, Tensor), AppError> {
    let prepared = zfnet::preprocess::prepare(bytes, &model.manifest.preprocess)?;
    let tensor = prepared
        .to_tensor(model.net.device())
        .map_err(|e| AppError::internal(e.to_string()))?;
    Ok((prepared, tensor))
}
