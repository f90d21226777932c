//! The GPUs' state through NVML (`libnvidia-ml.so.1`, loaded at run time): what `/metrics`
//! shows per GPU and what `/health/ready` checks.

use nvml_wrapper::enum_wrappers::device::TemperatureSensor;
use nvml_wrapper::Nvml;
use std::sync::OnceLock;

/// One GPU's readings; a reading the card or driver does not give is `None`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GpuReading {
    pub index: u32,
    pub name: String,
    /// Percent of time a kernel ran, over the driver's last sample period.
    pub utilization_percent: Option<u32>,
    pub memory_used_bytes: Option<u64>,
    pub memory_total_bytes: Option<u64>,
    pub temperature_celsius: Option<u32>,
    pub power_watts: Option<f64>,
    pub encoder_percent: Option<u32>,
    pub decoder_percent: Option<u32>,
}

/// NVML, initialised once per process; the reason when it cannot be.
fn nvml() -> Result<&'static Nvml, String> {
    static NVML: OnceLock<Result<Nvml, String>> = OnceLock::new();
    NVML.get_or_init(|| {
        Nvml::init().map_err(|e| format!("NVML (libnvidia-ml.so.1) is not usable: {e}"))
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// Whether NVML loads and how many GPUs it sees.
pub fn gpu_count() -> Result<u32, String> {
    nvml()?.device_count().map_err(|e| format!("NVML: {e}"))
}

/// The readings of GPU `index`; an error when NVML or the GPU does not answer.
pub fn read(index: u32) -> Result<GpuReading, String> {
    let nvml = nvml()?;
    let d = nvml
        .device_by_index(index)
        .map_err(|e| format!("GPU {index}: {e}"))?;
    let memory = d.memory_info().ok();
    Ok(GpuReading {
        index,
        name: d.name().unwrap_or_default(),
        utilization_percent: d.utilization_rates().ok().map(|u| u.gpu),
        memory_used_bytes: memory.as_ref().map(|m| m.used),
        memory_total_bytes: memory.as_ref().map(|m| m.total),
        temperature_celsius: d.temperature(TemperatureSensor::Gpu).ok(),
        power_watts: d.power_usage().ok().map(|mw| mw as f64 / 1000.0),
        encoder_percent: d.encoder_utilization().ok().map(|u| u.utilization),
        decoder_percent: d.decoder_utilization().ok().map(|u| u.utilization),
    })
}

/// Every GPU's readings (none where NVML does not load).
pub fn read_all() -> Vec<GpuReading> {
    let n = gpu_count().unwrap_or(0);
    (0..n).filter_map(|i| read(i).ok()).collect()
}
