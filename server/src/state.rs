//! The typed state every handler shares: the loaded model, the stores and the bound on
//! concurrent work.

use crate::error::AppError;
use crate::store::images::ImageStore;
use crate::store::probes::{ProbeSet, ProbeSlot, ProbeState};
use crate::store::sweeps::Sweeps;
use std::sync::Arc;
use tokio::sync::Semaphore;
use zfnet::LoadedModel;
use zfvis_api::{
    Accuracy, ClassInfo, ErrorCode, InputInfo, LayerInfo, LayerKind, ModelInfo, PoolInfo,
};

/// Limits on what one client can make the server do.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Inference jobs running at once; more wait for a slot.
    pub max_concurrent_jobs: usize,
    /// How long a request waits for a slot before it gets 503.
    pub queue_timeout: std::time::Duration,
    /// Requests waiting for a slot at most; one more gets 503 at once.
    pub max_queued_jobs: usize,
    /// How long a sweep that nobody watches or polls keeps computing.
    pub sweep_grace: std::time::Duration,
    /// Uploaded images whose forward trace is kept (least recently used first out).
    pub cached_images: usize,
    /// CPU-seconds (wall time × compute threads) one occlusion sweep may use.
    pub sweep_cpu_secs: f64,
    /// Occlusion sweeps one client address may have queued or running.
    pub sweeps_per_client: usize,
    /// How long the batching worker waits for more forwards after the first (0: takes only
    /// what is already waiting).
    pub batch_window: std::time::Duration,
    /// Most images in one batched forward (1: every forward alone).
    pub max_batch: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 20 * 1024 * 1024,
            max_concurrent_jobs: 2,
            queue_timeout: std::time::Duration::from_secs(30),
            max_queued_jobs: 64,
            sweep_grace: std::time::Duration::from_secs(10),
            cached_images: 16,
            sweep_cpu_secs: 120.0,
            sweeps_per_client: 2,
            batch_window: std::time::Duration::ZERO,
            max_batch: crate::batch::MAX_BATCH,
        }
    }
}

/// Bounds on connections.
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    pub max_connections: usize,
    pub header_timeout: std::time::Duration,
    /// Longest pause while a request body is being sent.
    pub body_timeout: std::time::Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 512,
            header_timeout: std::time::Duration::from_secs(10),
            body_timeout: std::time::Duration::from_secs(30),
        }
    }
}

/// Who may talk to the server ([`crate::http::guard`]).
#[derive(Debug, Clone, Default)]
pub struct Access {
    /// Other web origins allowed to make state-changing requests (`https://class.example`).
    pub allowed_origins: Vec<String>,
    /// Host names the server answers to; `None`: any.
    pub allowed_hosts: Option<Vec<String>>,
}

impl Access {
    /// What a server bound to `addr` answers to: only loopback names when bound to loopback
    /// (plus `extra`), any host otherwise unless `extra` names some.
    pub fn for_address(addr: std::net::SocketAddr, extra: &[String], origins: &[String]) -> Self {
        let allowed_hosts = if addr.ip().is_loopback() {
            let mut hosts = vec![
                "localhost".to_string(),
                "127.0.0.1".to_string(),
                "[::1]".to_string(),
                match addr.ip() {
                    std::net::IpAddr::V6(ip) => format!("[{ip}]"),
                    ip => ip.to_string(),
                },
            ];
            hosts.extend(extra.iter().cloned());
            Some(hosts)
        } else if extra.is_empty() {
            None
        } else {
            Some(extra.to_vec())
        };
        Access {
            allowed_origins: origins.to_vec(),
            allowed_hosts,
        }
    }
}

/// Invariance results kept (a few kB to 100 kB of JSON each).
const CACHED_ANALYSES: usize = 64;
/// Predictions kept (about 500 bytes of JSON each).
const CACHED_PREDICTIONS: usize = 4096;

/// What the models of one server share: the CPU (job slots and the queue for them) and each
/// other (`GET /api/models`, uploads opened under another model).
pub struct Group {
    jobs: Arc<Semaphore>,
    /// Requests waiting for a job slot now.
    queued: std::sync::atomic::AtomicUsize,
    members: std::sync::RwLock<Vec<std::sync::Weak<AppState>>>,
}

impl Group {
    fn new(limits: &Limits) -> Self {
        Group {
            jobs: Arc::new(Semaphore::new(limits.max_concurrent_jobs)),
            queued: Default::default(),
            members: Default::default(),
        }
    }

    /// Makes `state` one of the models listed (in the order admitted: the default first).
    pub fn admit(&self, state: &Arc<AppState>) {
        let mut members = self.members.write().unwrap_or_else(|p| p.into_inner());
        members.retain(|m| m.strong_count() > 0 && !std::ptr::eq(m.as_ptr(), Arc::as_ptr(state)));
        members.push(Arc::downgrade(state));
    }

    /// The models of this server that are still alive, in order.
    pub fn members(&self) -> Vec<Arc<AppState>> {
        let members = self.members.read().unwrap_or_else(|p| p.into_inner());
        members
            .iter()
            .filter_map(std::sync::Weak::upgrade)
            .collect()
    }
}

pub struct AppState {
    pub model: Arc<LoadedModel>,
    pub images: ImageStore,
    /// Every upload's crop and answer on disk, so ids outlive their trace in `images`.
    pub uploads: crate::store::uploads::UploadStore,
    pub info: ModelInfo,
    pub limits: Limits,
    /// Connection bounds (the body timeout applies in the router).
    pub conn: ConnLimits,
    pub access: Access,
    /// The probe set for top-9 views, when the server was started with one.
    pub probes: ProbeSlot,
    pub sweeps: Sweeps,
    /// Finished analyses (invariance curves as JSON) by image ids and parameters.
    pub analyses: crate::store::images::BytesCache,
    /// `POST /api/predict` answers (JSON) by content id.
    pub predictions: crate::store::images::BytesCache,
    /// Identical top-9 pictures and projections asked for at once are computed once.
    pub flights: crate::store::flight::Flights,
    /// Maps whose top-9 pictures the warm-up has rendered, of all (`serve --warm-top9`).
    pub warm: std::sync::Mutex<Option<(usize, usize)>>,
    /// The server's models, this one among them.
    pub group: Arc<Group>,
    /// Training snapshots by epoch, each with its own probe index and pictures (Fig. 4,
    /// `serve --evolution`); empty without.
    pub evolution: Vec<(u32, Arc<AppState>)>,
    /// Predictions and uploads of this model, batched ([`crate::batch`]).
    pub batcher: std::sync::OnceLock<crate::batch::Batcher>,
}

impl AppState {
    /// The only model of a server, or its default (its id from the manifest's name).
    pub fn new(model: LoadedModel, limits: Limits) -> Self {
        let group = Arc::new(Group::new(&limits));
        let mut state = AppState::in_group(model, limits, group);
        let id = state.info.id.clone();
        state.set_id(id, true);
        state
    }

    /// One more model of the server `first` belongs to: its limits, access rules, CPU slots and
    /// sweep places are shared; its caches are its own.
    pub fn beside(model: LoadedModel, first: &AppState) -> Self {
        let mut state = AppState::in_group(model, first.limits.clone(), first.group.clone());
        state.conn = first.conn;
        state.access = first.access.clone();
        state.sweeps = first.sweeps.sharing_places();
        let id = state.info.id.clone();
        state.set_id(id, false);
        state
    }

    fn in_group(model: LoadedModel, limits: Limits, group: Arc<Group>) -> Self {
        let mut info = model_info(&model);
        info.id = model_id_from(&info.name);
        AppState {
            images: ImageStore::new(limits.cached_images),
            uploads: crate::store::uploads::UploadStore::none(),
            model: Arc::new(model),
            info,
            group,
            evolution: Vec::new(),
            batcher: Default::default(),
            limits,
            conn: Default::default(),
            access: Default::default(),
            probes: ProbeSlot::default(),
            sweeps: Default::default(),
            analyses: crate::store::images::BytesCache::new(CACHED_ANALYSES),
            predictions: crate::store::images::BytesCache::new(CACHED_PREDICTIONS),
            flights: Default::default(),
            warm: Default::default(),
        }
    }

    /// The probe set, once its index is ready.
    pub fn probes(&self) -> Result<Arc<ProbeSet>, AppError> {
        match self.probes.get() {
            Some(ProbeState::Ready(p)) => Ok(p),
            Some(ProbeState::Building { done, total }) => Err(AppError::new(
                ErrorCode::IndexBuilding,
                format!(
                    "the probe index is being built ({done} of {total} images); top-9 views are ready when it is"
                ),
            )),
            Some(ProbeState::Failed(why)) => Err(AppError::new(
                ErrorCode::NoProbeIndex,
                format!("the probe index could not be built: {why}"),
            )),
            None => Err(AppError::new(
                ErrorCode::NoProbeIndex,
                "this server has no probe set: start it with --probe DIR for top-9 views (or give ?image=ID)",
            )),
        }
    }

    /// Names this model `id` (checked by the caller with `paths::valid_model_id`); `default`:
    /// the one used when a request names none.
    pub fn set_id(&mut self, id: String, default: bool) {
        self.sweeps.model = (!default).then(|| id.clone());
        self.info.id = id;
        self.info.default = default;
    }

    /// `?model=ID` for URLs of this model; `None` for the default, whose URLs name no model.
    pub fn model_param(&self) -> Option<&str> {
        (!self.info.default).then_some(self.info.id.as_str())
    }

    /// `url` (built by `zfvis_api::paths`) for this model.
    pub fn url(&self, url: String) -> String {
        match self.model_param() {
            None => url,
            Some(m) => zfvis_api::paths::with_model(&url, Some(m)),
        }
    }

    /// No request of any model runs or waits for a model slot now.
    pub fn idle(&self) -> bool {
        self.group.queued.load(std::sync::atomic::Ordering::SeqCst) == 0
            && self.group.jobs.available_permits() >= self.limits.max_concurrent_jobs
    }

    /// Runs CPU-heavy model work on the blocking pool, at most `max_concurrent_jobs` at once.
    pub async fn run_blocking<T, F>(&self, work: F) -> Result<T, AppError>
    where
        T: Send + 'static,
        F: FnOnce(&LoadedModel) -> Result<T, AppError> + Send + 'static,
    {
        use std::sync::atomic::Ordering;
        let busy = || {
            AppError::new(
                ErrorCode::Overloaded,
                "the server is busy with other requests; try again in a moment",
            )
        };
        /// A place in the queue, given back however the wait ends (even a dropped request).
        struct Place<'a>(&'a std::sync::atomic::AtomicUsize);
        impl Drop for Place<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let group = &self.group;
        let place = Place(&group.queued);
        if group.queued.fetch_add(1, Ordering::SeqCst) >= self.limits.max_queued_jobs {
            return Err(busy());
        }
        let waited = tokio::time::timeout(
            self.limits.queue_timeout,
            group.jobs.clone().acquire_owned(),
        )
        .await;
        drop(place);
        let permit = waited
            .map_err(|_| busy())?
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

/// A model id made from a name: letters, digits, `-`, `_`, `.` kept, anything else `-`.
pub fn model_id_from(name: &str) -> String {
    let id: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '-'
            }
        })
        .take(64)
        .collect();
    let id = id.trim_start_matches('.').to_string();
    if id.is_empty() {
        "model".into()
    } else {
        id
    }
}

fn model_info(model: &LoadedModel) -> ModelInfo {
    let net = &model.net;
    let sizes = net.layout.spatial_sizes();
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
            lrn: conv.spec.lrn.is_some(),
            pool: conv.spec.pool.map(|p| PoolInfo {
                kernel: p.kernel as u32,
                stride: p.stride as u32,
                ceil: p.ceil_mode,
            }),
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
            pool: None,
        });
    }
    let m = &model.manifest;
    ModelInfo {
        id: String::new(),
        default: false,
        architecture: net.arch.name().to_string(),
        name: m.name.clone(),
        trained: m.trained,
        provenance: m.provenance.clone(),
        weights_sha256: model.weights_sha256.clone(),
        parameters: net.parameter_count(),
        input_size: zfnet::arch::INPUT_SIZE as u32,
        input: Some(InputInfo {
            resize: m.preprocess.resize,
            crop: m.preprocess.crop,
            channel_order: match m.preprocess.channel_order {
                zfnet::manifest::ChannelOrder::Rgb => "rgb".into(),
                zfnet::manifest::ChannelOrder::Bgr => "bgr".into(),
            },
            pixel_scale: m.preprocess.pixel_scale,
            mean: m.preprocess.mean,
            std: m.preprocess.std,
        }),
        layers,
        evolution: None,
        conv1: zfnet::filter_stats::filter_stats(&net.convs[0].weight)
            .ok()
            .map(|s| zfvis_api::FilterStats {
                filters: s.filters,
                low_freq_share: s.low_freq_share,
                anisotropy: s.anisotropy,
                oriented_fraction: s.oriented_fraction,
                dead_filters: s.dead_filters,
            }),
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
