//! The `--device` flag: `cpu`, `wgpu[:N]` or `cuda[:N]`, each available only when compiled in.

use std::fmt;
use std::str::FromStr;

/// A device named on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// burn's flex CPU backend (feature `flex`, on by default).
    Cpu,
    /// A wgpu adapter by index (feature `wgpu`).
    Wgpu(usize),
    /// A CUDA GPU by index (feature `cuda`).
    Cuda(usize),
}

impl FromStr for DeviceSpec {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (kind, index) = match text.split_once(':') {
            Some((kind, index)) => {
                let index = index
                    .parse::<usize>()
                    .map_err(|_| format!("invalid device index `{index}` in `{text}`"))?;
                (kind, index)
            }
            None => (text, 0),
        };
        match kind {
            "cpu" if index == 0 => Ok(Self::Cpu),
            "wgpu" => Ok(Self::Wgpu(index)),
            "cuda" => Ok(Self::Cuda(index)),
            _ => Err(format!("unknown device `{text}` (expected cpu, wgpu[:N] or cuda[:N])")),
        }
    }
}

impl fmt::Display for DeviceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Wgpu(index) => write!(f, "wgpu:{index}"),
            Self::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

impl DeviceSpec {
    /// Returns the cargo feature that compiles this device's backend in.
    pub fn feature(self) -> &'static str {
        match self {
            Self::Cpu => "flex",
            Self::Wgpu(_) => "wgpu",
            Self::Cuda(_) => "cuda",
        }
    }

    /// Returns whether this binary was built with the device's backend.
    pub fn is_compiled(self) -> bool {
        match self {
            Self::Cpu => cfg!(feature = "flex"),
            Self::Wgpu(_) => cfg!(feature = "wgpu"),
            Self::Cuda(_) => cfg!(feature = "cuda"),
        }
    }

    /// Returns the error for a device that was not compiled in, with the build command.
    pub fn not_compiled(self) -> String {
        format!(
            "device `{self}` is not compiled into this binary; rebuild with \
             `cargo build --release -p ffc-train --features {}`",
            self.feature()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_devices() {
        assert_eq!("cpu".parse(), Ok(DeviceSpec::Cpu));
        assert_eq!("cuda".parse(), Ok(DeviceSpec::Cuda(0)));
        assert_eq!("cuda:3".parse(), Ok(DeviceSpec::Cuda(3)));
        assert_eq!("wgpu:1".parse(), Ok(DeviceSpec::Wgpu(1)));
    }

    #[test]
    fn rejects_unknown_devices() {
        assert!("tpu".parse::<DeviceSpec>().unwrap_err().contains("unknown device `tpu`"));
        assert!("cuda:x".parse::<DeviceSpec>().unwrap_err().contains("invalid device index"));
    }
}
