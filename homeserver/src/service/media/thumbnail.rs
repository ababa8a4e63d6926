//! Thumbnail generation: pure, blocking code that the service runs on the
//! blocking pool. An image's declared dimensions are read from its header and
//! checked against a cap before any pixel is decoded, and the decoder runs
//! under `image::Limits`, so a small file that claims to be huge (a
//! decompression bomb) is refused instead of exhausting memory.

use std::io::Cursor;

use image::codecs::gif::{GifDecoder, GifEncoder, Repeat};
use image::codecs::jpeg::JpegEncoder;
use image::imageops::FilterType;
use image::{
    AnimationDecoder, DynamicImage, Frame, ImageDecoder, ImageFormat, ImageReader, Limits,
};

/// Widest or tallest image we decode.
pub const MAX_SIDE: u32 = 8192;
/// Most pixels in an image we decode (about 40 megapixels).
pub const MAX_PIXELS: u64 = 40_000_000;
/// Most decoded pixels summed over the frames of an animated thumbnail source.
const MAX_ANIMATION_PIXELS: u64 = 100_000_000;
const MAX_FRAMES: usize = 500;

/// The sizes thumbnails are made in. A request gets the smallest one that
/// covers it, so arbitrary sizes cannot make the server decode and store an
/// unbounded number of variants.
pub const SIZES: [(u32, u32); 5] = [(32, 32), (96, 96), (320, 240), (640, 480), (800, 600)];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Fit within the box, keeping the aspect ratio.
    Scale,
    /// Fill the box exactly, cutting off what sticks out.
    Crop,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Scale => "scale",
            Method::Crop => "crop",
        }
    }
}

/// The encoding of a thumbnail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Jpeg,
    Png,
    /// Animated GIF, only for animated GIF sources that asked for animation.
    Gif,
}

impl Output {
    pub fn content_type(self) -> &'static str {
        match self {
            Output::Jpeg => "image/jpeg",
            Output::Png => "image/png",
            Output::Gif => "image/gif",
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            Output::Jpeg => "jpg",
            Output::Png => "png",
            Output::Gif => "gif",
        }
    }

    /// JPEG stays JPEG (photos); everything else becomes PNG, which keeps
    /// transparency; animated GIFs stay GIF when animation is wanted.
    pub fn for_source(content_type: &str, animated: bool) -> Option<Output> {
        match content_type {
            "image/jpeg" => Some(Output::Jpeg),
            "image/gif" if animated => Some(Output::Gif),
            "image/png" | "image/gif" | "image/webp" => Some(Output::Png),
            _ => None,
        }
    }
}

/// What to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    pub width: u32,
    pub height: u32,
    pub method: Method,
    pub output: Output,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ThumbnailError {
    #[error("image of {0}x{1} pixels is too large to thumbnail")]
    TooLarge(u32, u32),
    #[error("cannot thumbnail this media: {0}")]
    Unsupported(String),
}

fn unsupported(err: impl std::fmt::Display) -> ThumbnailError {
    ThumbnailError::Unsupported(err.to_string())
}

/// The standard size that covers `width` x `height` (the largest if none does).
pub fn snap_size(width: u32, height: u32) -> (u32, u32) {
    SIZES
        .iter()
        .copied()
        .find(|&(w, h)| w >= width && h >= height)
        .unwrap_or(SIZES[SIZES.len() - 1])
}

/// Refuses images past [`MAX_SIDE`] or [`MAX_PIXELS`].
pub fn check_dimensions(width: u32, height: u32) -> Result<(), ThumbnailError> {
    if width == 0 || height == 0 {
        return Err(ThumbnailError::Unsupported("empty image".into()));
    }
    if width > MAX_SIDE || height > MAX_SIDE || u64::from(width) * u64::from(height) > MAX_PIXELS {
        return Err(ThumbnailError::TooLarge(width, height));
    }
    Ok(())
}

/// The size of the thumbnail of a `src_w` x `src_h` image. Never upscales.
pub fn target_size(src_w: u32, src_h: u32, box_w: u32, box_h: u32, method: Method) -> (u32, u32) {
    if src_w <= box_w && src_h <= box_h {
        return (src_w, src_h);
    }
    match method {
        Method::Crop => (box_w.min(src_w), box_h.min(src_h)),
        Method::Scale => {
            let ratio = f64::min(
                f64::from(box_w) / f64::from(src_w),
                f64::from(box_h) / f64::from(src_h),
            );
            let scaled = |side: u32| ((f64::from(side) * ratio).round() as u32).max(1);
            (scaled(src_w), scaled(src_h))
        }
    }
}

fn limits() -> Limits {
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_PIXELS * 4 + (64 << 20));
    limits
}

fn source_format(bytes: &[u8]) -> Result<ImageFormat, ThumbnailError> {
    match image::guess_format(bytes).map_err(unsupported)? {
        format @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Gif | ImageFormat::WebP) => {
            Ok(format)
        }
        other => Err(unsupported(format!("{other:?} images are not thumbnailed"))),
    }
}

/// The dimensions an image declares in its header, without decoding it.
pub fn dimensions(bytes: &[u8]) -> Result<(u32, u32), ThumbnailError> {
    let format = source_format(bytes)?;
    ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(unsupported)
}

fn resize(image: &DynamicImage, width: u32, height: u32, method: Method) -> DynamicImage {
    if (image.width(), image.height()) == (width, height) {
        return image.clone();
    }
    match method {
        Method::Scale => image.resize_exact(width, height, FilterType::Triangle),
        Method::Crop => image.resize_to_fill(width, height, FilterType::Triangle),
    }
}

/// Makes the thumbnail of the image in `bytes`.
pub fn generate(bytes: &[u8], spec: Spec) -> Result<Vec<u8>, ThumbnailError> {
    let format = source_format(bytes)?;
    let (src_w, src_h) = dimensions(bytes)?;
    check_dimensions(src_w, src_h)?;
    let (width, height) = target_size(src_w, src_h, spec.width, spec.height, spec.method);
    if spec.output == Output::Gif && format == ImageFormat::Gif {
        return animated_gif(bytes, (src_w, src_h), (width, height), spec.method);
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    reader.limits(limits());
    let image = reader.decode().map_err(unsupported)?;
    let thumbnail = resize(&image, width, height, spec.method);
    let mut out = Vec::new();
    match spec.output {
        Output::Jpeg => {
            let rgb = DynamicImage::ImageRgb8(thumbnail.to_rgb8());
            rgb.write_with_encoder(JpegEncoder::new_with_quality(&mut out, 85))
                .map_err(unsupported)?;
        }
        Output::Png | Output::Gif => thumbnail
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .map_err(unsupported)?,
    }
    Ok(out)
}

/// Resizes every frame of a GIF, one source frame in memory at a time.
fn animated_gif(
    bytes: &[u8],
    (src_w, src_h): (u32, u32),
    (width, height): (u32, u32),
    method: Method,
) -> Result<Vec<u8>, ThumbnailError> {
    let mut decoder = GifDecoder::new(Cursor::new(bytes)).map_err(unsupported)?;
    decoder.set_limits(limits()).map_err(unsupported)?;
    let frame_pixels = u64::from(src_w) * u64::from(src_h);
    let max_frames = (MAX_ANIMATION_PIXELS / frame_pixels).clamp(1, MAX_FRAMES as u64) as usize;
    let mut frames = Vec::new();
    for frame in decoder.into_frames().take(max_frames) {
        let frame = frame.map_err(unsupported)?;
        let delay = frame.delay();
        let image = DynamicImage::ImageRgba8(frame.into_buffer());
        let resized = resize(&image, width, height, method).to_rgba8();
        frames.push(Frame::from_parts(resized, 0, 0, delay));
    }
    let mut out = Vec::new();
    {
        let mut encoder = GifEncoder::new(&mut out);
        encoder.set_repeat(Repeat::Infinite).map_err(unsupported)?;
        encoder.encode_frames(frames).map_err(unsupported)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgba, RgbaImage};

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = RgbaImage::from_pixel(width, height, Rgba([200, 10, 10, 255]));
        let mut out = Vec::new();
        DynamicImage::ImageRgba8(image)
            .write_to(&mut Cursor::new(&mut out), ImageFormat::Png)
            .unwrap();
        out
    }

    fn decoded_size(bytes: &[u8]) -> (u32, u32) {
        let image = image::load_from_memory(bytes).unwrap();
        (image.width(), image.height())
    }

    #[test]
    fn sizes_snap_up() {
        assert_eq!(snap_size(10, 10), (32, 32));
        assert_eq!(snap_size(32, 33), (96, 96));
        assert_eq!(snap_size(300, 200), (320, 240));
        assert_eq!(snap_size(5000, 5000), (800, 600));
    }

    #[test]
    fn target_sizes_keep_aspect_or_fill() {
        assert_eq!(target_size(64, 48, 32, 32, Method::Scale), (32, 24));
        assert_eq!(target_size(64, 48, 32, 32, Method::Crop), (32, 32));
        assert_eq!(target_size(20, 10, 32, 32, Method::Crop), (20, 10));
        assert_eq!(target_size(1000, 1, 32, 32, Method::Scale), (32, 1));
    }

    #[test]
    fn dimension_cap() {
        assert!(check_dimensions(8192, 4000).is_ok());
        assert_eq!(
            check_dimensions(8193, 10),
            Err(ThumbnailError::TooLarge(8193, 10))
        );
        assert_eq!(
            check_dimensions(8000, 8000),
            Err(ThumbnailError::TooLarge(8000, 8000))
        );
        assert!(check_dimensions(0, 5).is_err());
    }

    #[test]
    fn oversized_images_are_refused_before_decoding() {
        let wide = png(9000, 1);
        let spec = Spec {
            width: 32,
            height: 32,
            method: Method::Scale,
            output: Output::Png,
        };
        assert_eq!(
            generate(&wide, spec),
            Err(ThumbnailError::TooLarge(9000, 1))
        );
    }

    #[test]
    fn png_and_jpeg_thumbnails() {
        let source = png(64, 48);
        let mut spec = Spec {
            width: 32,
            height: 32,
            method: Method::Scale,
            output: Output::Png,
        };
        assert_eq!(decoded_size(&generate(&source, spec).unwrap()), (32, 24));
        spec.method = Method::Crop;
        spec.output = Output::Jpeg;
        let jpeg = generate(&source, spec).unwrap();
        assert_eq!(image::guess_format(&jpeg).unwrap(), ImageFormat::Jpeg);
        assert_eq!(decoded_size(&jpeg), (32, 32));
    }

    #[test]
    fn garbage_is_unsupported() {
        let spec = Spec {
            width: 32,
            height: 32,
            method: Method::Scale,
            output: Output::Png,
        };
        assert!(matches!(
            generate(b"<html>not an image</html>", spec),
            Err(ThumbnailError::Unsupported(_))
        ));
    }
}
