//! ONNX initializers as candle tensors, and grouped conv weights made dense.

use super::onnx_proto::{data_type, TensorProto};
use candle_core::{DType, Device, Tensor};

/// A conv weight with `groups` groups `[out, in/g, k, k]` as the dense `[out, in, k, k]` that is
/// zero outside the diagonal blocks: the same convolution.
pub(super) fn dense_from_groups(w: &Tensor, groups: usize) -> candle_core::Result<Tensor> {
    let (out, in_g, kh, kw) = w.dims4()?;
    if out % groups != 0 {
        candle_core::bail!("{out} output channels do not split into {groups} groups");
    }
    let (out_g, plane) = (out / groups, in_g * kh * kw);
    let src = w.flatten_all()?.to_vec1::<f32>()?;
    let mut dense = vec![0f32; out * groups * plane];
    for o in 0..out {
        let g = o / out_g;
        let row = &mut dense[o * groups * plane..(o + 1) * groups * plane];
        row[g * plane..(g + 1) * plane].copy_from_slice(&src[o * plane..(o + 1) * plane]);
    }
    Tensor::from_vec(dense, (out, in_g * groups, kh, kw), &Device::Cpu)
}

/// An initializer's values as an f32 tensor of its shape.
pub(super) fn tensor(t: &TensorProto) -> std::result::Result<Tensor, String> {
    if t.data_location == 1 {
        return Err(
            "stored outside the file (external data): save the model as one file \
                    (onnx.save(model, path, save_as_external_data=False))"
                .into(),
        );
    }
    let dims: Vec<usize> = t.dims.iter().map(|&d| d.max(0) as usize).collect();
    let count: usize = dims.iter().product();
    let cpu = &Device::Cpu;
    let width = match t.data_type {
        data_type::FLOAT => 4,
        data_type::FLOAT16 => 2,
        _ => 8,
    };
    if !t.raw_data.is_empty() && t.raw_data.len() != count * width {
        return Err(format!(
            "{} bytes of data for shape {dims:?} ({count} values of {width} bytes)",
            t.raw_data.len()
        ));
    }
    let out = match t.data_type {
        data_type::FLOAT if !t.raw_data.is_empty() => {
            Tensor::from_raw_buffer(&t.raw_data, DType::F32, &dims, cpu)
        }
        data_type::FLOAT if t.float_data.len() == count => {
            Tensor::from_slice(&t.float_data, dims.as_slice(), cpu)
        }
        data_type::FLOAT16 if !t.raw_data.is_empty() => {
            Tensor::from_raw_buffer(&t.raw_data, DType::F16, &dims, cpu)
                .and_then(|x| x.to_dtype(DType::F32))
        }
        data_type::DOUBLE if !t.raw_data.is_empty() => {
            Tensor::from_raw_buffer(&t.raw_data, DType::F64, &dims, cpu)
                .and_then(|x| x.to_dtype(DType::F32))
        }
        data_type::DOUBLE if t.double_data.len() == count => {
            Tensor::from_slice(&t.double_data, dims.as_slice(), cpu)
                .and_then(|x| x.to_dtype(DType::F32))
        }
        data_type::INT64 => return Err("integer weights".into()),
        ty => {
            return Err(format!(
                "data type {ty} with {count} values expected: zfvis reads float, float16 and \
                 double weights stored whole"
            ))
        }
    };
    out.map_err(|e| format!("its {count} values do not fit its shape {dims:?} ({e})"))
}
