//! Naming the device tensors live on: the CPU, or a CUDA GPU in builds with the `cuda`
//! feature.

use anyhow::{bail, Context, Result};
use candle_core::Device;

/// `cpu`, `cuda` (the first GPU) or `cuda:N`.
pub fn parse_device(name: &str) -> Result<Device> {
    if name == "cpu" {
        return Ok(Device::Cpu);
    }
    let Some(rest) = name.strip_prefix("cuda") else {
        bail!("device `{name}`: expected cpu, cuda or cuda:N");
    };
    let ordinal = match rest {
        "" => 0,
        _ => rest
            .strip_prefix(':')
            .and_then(|n| n.parse::<usize>().ok())
            .with_context(|| format!("device `{name}`: expected cpu, cuda or cuda:N"))?,
    };
    if !candle_core::utils::cuda_is_available() {
        bail!(
            "device `{name}`: this seqit was built without CUDA support\n\
             hint: build it with `cargo build --release --features cuda` (needs the CUDA toolkit's nvcc)"
        );
    }
    Device::new_cuda(ordinal).with_context(|| format!("cannot open CUDA device {ordinal}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_cpu_and_rejects_the_rest() {
        assert!(parse_device("cpu").unwrap().is_cpu());
        for bad in ["gpu", "cuda:x", "cuda1", "metal"] {
            let e = parse_device(bad).unwrap_err().to_string();
            assert!(e.contains("expected cpu, cuda or cuda:N"), "{bad}: {e}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_build_it() {
        for name in ["cuda", "cuda:1"] {
            let e = format!("{:#}", parse_device(name).unwrap_err());
            assert!(
                e.contains("built without CUDA") && e.contains("--features cuda"),
                "{e}"
            );
        }
    }
}
