//! Where the model runs. The CPU default is Flex, measured fastest here (`ovseg bench`, docs/benchmarks.md);
//! CUDA and wgpu (Vulkan/Metal/WebGPU) are compiled in with the `cuda` and `wgpu` features.

pub type Cpu = burn::backend::Flex;

#[derive(clap::ValueEnum, Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DeviceKind {
    /// burn's Flex CPU backend.
    #[default]
    Cpu,
    /// The first CUDA GPU (build with `--features cuda`).
    #[cfg(feature = "cuda")]
    Cuda,
    /// The default wgpu adapter (build with `--features wgpu`).
    #[cfg(feature = "wgpu")]
    Wgpu,
}

/// Calls `$run::<Backend>(args, device)` for the chosen device.
#[macro_export]
macro_rules! on_device {
    ($kind:expr, $run:ident ( $($arg:expr),* )) => {
        match $kind {
            $crate::backend::DeviceKind::Cpu => $run::<$crate::backend::Cpu>($($arg,)* Default::default()),
            #[cfg(feature = "cuda")]
            $crate::backend::DeviceKind::Cuda => $run::<burn::backend::Cuda>($($arg,)* Default::default()),
            #[cfg(feature = "wgpu")]
            $crate::backend::DeviceKind::Wgpu => $run::<burn::backend::Wgpu>($($arg,)* Default::default()),
        }
    };
}
