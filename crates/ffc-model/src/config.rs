//! Backbone configuration: which network to build, its embedding size, input size and widths.
//!
//! The config is a plain serde struct so that it can sit inside a training config file. Only
//! `network` is required; every other field has the default documented on it. Unknown fields and
//! unknown network names are rejected when the config is deserialised, and
//! [`BackboneConfig::validate`] rejects values that no backbone can be built from.

use std::fmt;
use std::str::FromStr;

use burn::tensor::backend::Backend;
use serde::{Deserialize, Serialize};

use crate::Backbone;
use crate::error::ModelError;
use crate::iresnet::IResNet;
use crate::mobilefacenet::MobileFaceNet;
use crate::params::materialize;

/// Number of stride-2 stages in every backbone of this crate, so the feature map that reaches the
/// head is about 1/16 of the input in each dimension (7x7 for a 112x112 input).
pub(crate) const N_STRIDE2_STAGES: usize = 4;

/// The backbone family and depth, named as insightface's `network` option names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NetworkKind {
    /// IResNet-18: IBasicBlocks per stage `[2, 2, 2, 2]`.
    #[serde(rename = "r18")]
    R18,
    /// IResNet-34: IBasicBlocks per stage `[3, 4, 6, 3]`.
    #[serde(rename = "r34")]
    R34,
    /// IResNet-50: IBasicBlocks per stage `[3, 4, 14, 3]`.
    #[serde(rename = "r50")]
    R50,
    /// IResNet-100: IBasicBlocks per stage `[3, 13, 30, 3]`.
    #[serde(rename = "r100")]
    R100,
    /// MobileFaceNet with a global depthwise convolution (GDConv) head.
    #[serde(rename = "mbf")]
    MobileFaceNet,
}

impl NetworkKind {
    /// Every network kind, in the order that messages list them.
    pub const ALL: [NetworkKind; 5] = [
        NetworkKind::R18,
        NetworkKind::R34,
        NetworkKind::R50,
        NetworkKind::R100,
        NetworkKind::MobileFaceNet,
    ];

    /// Returns the insightface name of the network (`"r50"`, `"mbf"`, ...).
    pub fn name(self) -> &'static str {
        match self {
            NetworkKind::R18 => "r18",
            NetworkKind::R34 => "r34",
            NetworkKind::R50 => "r50",
            NetworkKind::R100 => "r100",
            NetworkKind::MobileFaceNet => "mbf",
        }
    }

    /// Returns the IBasicBlocks per stage of an IResNet kind, or `None` for MobileFaceNet.
    pub fn iresnet_blocks(self) -> Option<[usize; 4]> {
        match self {
            NetworkKind::R18 => Some([2, 2, 2, 2]),
            NetworkKind::R34 => Some([3, 4, 6, 3]),
            NetworkKind::R50 => Some([3, 4, 14, 3]),
            NetworkKind::R100 => Some([3, 13, 30, 3]),
            NetworkKind::MobileFaceNet => None,
        }
    }
}

impl fmt::Display for NetworkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for NetworkKind {
    type Err = ModelError;

    /// Parses an insightface network name. The error lists the known names.
    fn from_str(name: &str) -> Result<Self, Self::Err> {
        NetworkKind::ALL.into_iter().find(|kind| kind.name() == name).ok_or_else(|| {
            ModelError::InvalidConfig {
                field: "network",
                value: name.to_owned(),
                reason: "is not a known network (expected one of r18, r34, r50, r100, mbf)",
            }
        })
    }
}

/// Configuration of a face-recognition backbone, built with [`BackboneConfig::init`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackboneConfig {
    /// The network to build: `"r18"`, `"r34"`, `"r50"`, `"r100"` or `"mbf"`. Required.
    pub network: NetworkKind,
    /// Length of the embedding vector. Default 512.
    #[serde(default = "default_embedding_size")]
    pub embedding_size: usize,
    /// Input image size as `[height, width]` in pixels. Default `[112, 112]`. The IResNet head's
    /// linear layer and the MobileFaceNet GDConv kernel are sized from it, so a backbone only
    /// accepts inputs of exactly this size.
    #[serde(default = "default_input_size")]
    pub input_size: [usize; 2],
    /// Channel widths of the four IResNet stages. `None` (the default) means
    /// `[64, 128, 256, 512]`. Must stay `None` for MobileFaceNet, whose widths are fixed.
    #[serde(default)]
    pub widths: Option<[usize; 4]>,
    /// Dropout probability before the IResNet head's linear layer, in `[0, 1)`. Default 0.
    /// MobileFaceNet has no dropout and rejects a non-zero value.
    #[serde(default)]
    pub dropout: f64,
}

fn default_embedding_size() -> usize {
    512
}

fn default_input_size() -> [usize; 2] {
    [112, 112]
}

impl BackboneConfig {
    /// IResNet stage widths used when [`BackboneConfig::widths`] is `None`.
    pub const DEFAULT_WIDTHS: [usize; 4] = [64, 128, 256, 512];

    /// Creates a config for `network` with every other field at its default.
    pub fn new(network: NetworkKind) -> Self {
        Self {
            network,
            embedding_size: default_embedding_size(),
            input_size: default_input_size(),
            widths: None,
            dropout: 0.0,
        }
    }

    /// Sets the embedding size.
    pub fn with_embedding_size(mut self, embedding_size: usize) -> Self {
        self.embedding_size = embedding_size;
        self
    }

    /// Sets the input size as `[height, width]`.
    pub fn with_input_size(mut self, input_size: [usize; 2]) -> Self {
        self.input_size = input_size;
        self
    }

    /// Sets the IResNet stage widths.
    pub fn with_widths(mut self, widths: [usize; 4]) -> Self {
        self.widths = Some(widths);
        self
    }

    /// Sets the dropout probability of the IResNet head.
    pub fn with_dropout(mut self, dropout: f64) -> Self {
        self.dropout = dropout;
        self
    }

    /// Returns the IResNet stage widths, or [`BackboneConfig::DEFAULT_WIDTHS`] when unset.
    pub fn stage_widths(&self) -> [usize; 4] {
        self.widths.unwrap_or(Self::DEFAULT_WIDTHS)
    }

    /// Returns the spatial size `[height, width]` of the last feature map, after the four
    /// stride-2 stages.
    ///
    /// Each stage is a 3x3 convolution with padding 1 and stride 2, which maps a side of `n`
    /// pixels to `(n - 1) / 2 + 1`, so any positive input size leaves at least one pixel.
    pub fn final_spatial_size(&self) -> [usize; 2] {
        self.input_size
            .map(|side| (0..N_STRIDE2_STAGES).fold(side, |n, _| n.saturating_sub(1) / 2 + 1))
    }

    /// Checks every field and returns the first invalid one as [`ModelError::InvalidConfig`].
    pub fn validate(&self) -> Result<(), ModelError> {
        let invalid =
            |field, value: String, reason| Err(ModelError::InvalidConfig { field, value, reason });

        if self.embedding_size == 0 {
            return invalid("embedding_size", "0".into(), "must be positive");
        }
        if self.input_size.contains(&0) {
            let value = format!("{:?}", self.input_size);
            return invalid("input_size", value, "must have a positive height and width");
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return invalid("dropout", self.dropout.to_string(), "must lie in [0, 1)");
        }
        match (self.network, self.widths) {
            (NetworkKind::MobileFaceNet, Some(widths)) => invalid(
                "widths",
                format!("{widths:?}"),
                "applies only to IResNet networks (remove it for mbf)",
            ),
            (NetworkKind::MobileFaceNet, None) if self.dropout != 0.0 => invalid(
                "dropout",
                self.dropout.to_string(),
                "applies only to IResNet networks (set it to 0 for mbf)",
            ),
            (_, Some(widths)) if widths.contains(&0) => {
                invalid("widths", format!("{widths:?}"), "must all be positive")
            }
            _ => Ok(()),
        }
    }

    /// Builds the backbone on `device`, or returns the error of [`BackboneConfig::validate`].
    ///
    /// Every parameter is drawn before this returns (see [`materialize`]), so seeding the
    /// backend with `B::seed` right before this call makes the weights reproducible.
    pub fn try_init<B: Backend>(&self, device: &B::Device) -> Result<Backbone<B>, ModelError> {
        self.validate()?;

        let backbone = match self.network {
            NetworkKind::MobileFaceNet => Backbone::MobileFaceNet(MobileFaceNet::new(self, device)),
            _ => Backbone::IResNet(IResNet::new(self, device)),
        };
        materialize(&backbone);
        Ok(backbone)
    }

    /// Builds the backbone on `device`, as [`BackboneConfig::try_init`] does.
    ///
    /// # Panics
    ///
    /// Panics with the message of [`BackboneConfig::validate`] if the config is invalid.
    pub fn init<B: Backend>(&self, device: &B::Device) -> Backbone<B> {
        self.try_init(device).unwrap_or_else(|err| panic!("{err}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deserialises_minimal_config_with_defaults() {
        let config: BackboneConfig = serde_json::from_str(r#"{"network": "r50"}"#).unwrap();

        assert_eq!(config, BackboneConfig::new(NetworkKind::R50));
        assert_eq!(config.embedding_size, 512);
        assert_eq!(config.input_size, [112, 112]);
        assert_eq!(config.stage_widths(), [64, 128, 256, 512]);
        assert_eq!(config.dropout, 0.0);
    }

    #[test]
    fn serialises_network_names_as_insightface() {
        for kind in NetworkKind::ALL {
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.name()));
            assert_eq!(kind.name().parse::<NetworkKind>().unwrap(), kind);
        }
    }

    #[test]
    fn config_round_trips_through_json() {
        let config = BackboneConfig::new(NetworkKind::R18)
            .with_embedding_size(128)
            .with_input_size([64, 48])
            .with_widths([16, 32, 64, 128])
            .with_dropout(0.2);

        let json = serde_json::to_string(&config).unwrap();
        let back: BackboneConfig = serde_json::from_str(&json).unwrap();

        assert_eq!(back, config);
    }

    #[test]
    fn unknown_network_lists_known_names() {
        let err = serde_json::from_str::<BackboneConfig>(r#"{"network": "r200"}"#).unwrap_err();
        let message = err.to_string();

        assert!(message.contains("r200"), "{message}");
        for kind in NetworkKind::ALL {
            assert!(message.contains(kind.name()), "{message}");
        }

        let message = "resnet".parse::<NetworkKind>().unwrap_err().to_string();
        assert!(message.contains("`resnet`"), "{message}");
        assert!(message.contains("r18, r34, r50, r100, mbf"), "{message}");
    }

    #[test]
    fn unknown_field_is_rejected() {
        let json = r#"{"network": "r18", "embedding": 128}"#;
        let message = serde_json::from_str::<BackboneConfig>(json).unwrap_err().to_string();

        assert!(message.contains("embedding"), "{message}");
    }

    #[test]
    fn validate_names_invalid_field() {
        let r18 = BackboneConfig::new(NetworkKind::R18);
        let mbf = BackboneConfig::new(NetworkKind::MobileFaceNet);
        let cases = [
            (r18.clone().with_embedding_size(0), "`embedding_size` = `0`"),
            (r18.clone().with_input_size([112, 0]), "`input_size` = `[112, 0]`"),
            (r18.clone().with_widths([64, 0, 256, 512]), "`widths` = `[64, 0, 256, 512]`"),
            (r18.clone().with_dropout(1.0), "`dropout` = `1`"),
            (r18.clone().with_dropout(-0.1), "`dropout` = `-0.1`"),
            (r18.clone().with_dropout(f64::NAN), "`dropout` = `NaN`"),
            (mbf.clone().with_widths([64, 128, 256, 512]), "`widths` = `[64, 128, 256, 512]`"),
            (mbf.clone().with_dropout(0.1), "`dropout` = `0.1`"),
        ];

        for (config, expected) in cases {
            let message = config.validate().unwrap_err().to_string();
            assert!(message.contains(expected), "{message:?} lacks {expected:?}");
        }
        assert!(r18.validate().is_ok());
        assert!(mbf.validate().is_ok());
    }

    #[test]
    fn final_spatial_size_follows_input_size() {
        let size = |input_size| {
            BackboneConfig::new(NetworkKind::R18).with_input_size(input_size).final_spatial_size()
        };

        assert_eq!(size([112, 112]), [7, 7]);
        assert_eq!(size([64, 64]), [4, 4]);
        assert_eq!(size([32, 48]), [2, 3]);
        assert_eq!(size([113, 1]), [8, 1]);
    }
}
