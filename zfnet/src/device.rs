//! Run-time device choice: `cpu`, `cuda`, `cuda:N` or `auto` (CUDA when built with the `cuda`
//! feature and a GPU answers, else CPU).

use crate::{Error, Result};
use candle_core::Device;

pub fn parse_device(spec: &str) -> Result<Device> {
    match spec {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::cuda_if_available(0).unwrap_or(Device::Cpu)),
        s if s == "cuda" || s.starts_with("cuda:") => {
            let ordinal = s
                .strip_prefix("cuda:")
                .map(|n| {
                    n.parse::<usize>()
                        .map_err(|_| Error::Config(format!("bad CUDA ordinal in device '{spec}'")))
                })
                .transpose()?
                .unwrap_or(0);
            if !candle_core::utils::cuda_is_available() {
                return Err(Error::Config(format!(
                    "device '{spec}' asked for, but this build has no CUDA support (build with --features cuda)"
                )));
            }
            Device::new_cuda(ordinal).map_err(|e| {
                // candle's message carries a backtrace: keep its first line
                let first = e.to_string().lines().next().unwrap_or_default().to_string();
                Error::Config(format!(
                    "CUDA device {ordinal} cannot be used ({first}): is an NVIDIA driver for \
                     CUDA 13 installed, and does the GPU exist (nvidia-smi)?"
                ))
            })
        }
        other => Err(Error::Config(format!(
            "unknown device '{other}': use cpu, cuda, cuda:N or auto"
        ))),
    }
}

/// `"cpu"` or `"cuda:N"`.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(_) => match device.location() {
            candle_core::DeviceLocation::Cuda { gpu_id } => format!("cuda:{gpu_id}"),
            _ => "cuda".into(),
        },
        Device::Metal(_) => "metal".into(),
    }
}
