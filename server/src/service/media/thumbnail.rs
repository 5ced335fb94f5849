//! Thumbnail sizes and rendering: choosing a size from the spec's recommended set, refusing
//! image bombs from their header, and scaling or cropping with the `image` crate.
//!
//! Rendering is CPU-bound and synchronous; callers run it on a blocking thread.

use std::io::Cursor;

use image::codecs::jpeg::JpegEncoder;
use image::{DynamicImage, ImageDecoder, ImageFormat, ImageReader, Limits};

/// The widest or tallest image that is decoded for a thumbnail, in pixels.
pub const MAX_SIDE: u32 = 10_000;

/// The largest image that is decoded for a thumbnail, in pixels (50 megapixels). At 8 bytes per
/// pixel (16-bit RGBA) that bounds a decoded image to 400 MB.
pub const MAX_PIXELS: u64 = 50_000_000;

/// The maximum memory one decoder may allocate, in bytes: room for the largest allowed image.
const MAX_DECODER_ALLOC: u64 = 512 * 1024 * 1024;

/// Quality of JPEG thumbnails, from 1 to 100.
const JPEG_QUALITY: u8 = 85;

/// The content types that thumbnails are made from.
pub const THUMBNAIL_SOURCE_TYPES: [&str; 4] =
    ["image/jpeg", "image/png", "image/gif", "image/webp"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Fill the requested box and cut off what sticks out, so the thumbnail has the box's aspect.
    Crop,
    /// Fit inside the requested box, keeping the image's aspect.
    Scale,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Self::Crop => "crop",
            Self::Scale => "scale",
        }
    }
}

/// A thumbnail size that the server renders and caches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThumbnailSize {
    /// One of [`DEFAULT_SIZES`].
    Box { width: u32, height: u32, method: Method },
    /// A static copy at full size, for requests larger than every default size, because the
    /// specification forbids returning a thumbnail smaller than requested when the original is
    /// larger.
    Full,
}

/// The sizes that the Matrix specification recommends servers produce.
pub const DEFAULT_SIZES: [ThumbnailSize; 5] = [
    ThumbnailSize::Box { width: 32, height: 32, method: Method::Crop },
    ThumbnailSize::Box { width: 96, height: 96, method: Method::Crop },
    ThumbnailSize::Box { width: 320, height: 240, method: Method::Scale },
    ThumbnailSize::Box { width: 640, height: 480, method: Method::Scale },
    ThumbnailSize::Box { width: 800, height: 600, method: Method::Scale },
];

impl ThumbnailSize {
    /// The key under which this size is cached, such as `320x240-scale`.
    pub fn key(&self) -> String {
        match self {
            Self::Box { width, height, method } => format!("{width}x{height}-{}", method.as_str()),
            Self::Full => "full".to_owned(),
        }
    }
}

/// Picks the smallest default size that is at least `width` x `height`, preferring sizes with
/// the requested method; [`ThumbnailSize::Full`] when no default size is large enough.
pub fn choose_size(width: u32, height: u32, method: Method) -> ThumbnailSize {
    let large_enough = |size: &&ThumbnailSize| match size {
        ThumbnailSize::Box { width: w, height: h, .. } => *w >= width && *h >= height,
        ThumbnailSize::Full => true,
    };
    let area = |size: &&ThumbnailSize| match size {
        ThumbnailSize::Box { width, height, .. } => u64::from(*width) * u64::from(*height),
        ThumbnailSize::Full => u64::MAX,
    };
    let same_method = |size: &&ThumbnailSize| matches!(size, ThumbnailSize::Box { method: m, .. } if *m == method);

    DEFAULT_SIZES
        .iter()
        .filter(large_enough)
        .filter(same_method)
        .min_by_key(area)
        .or_else(|| DEFAULT_SIZES.iter().filter(large_enough).min_by_key(area))
        .copied()
        .unwrap_or(ThumbnailSize::Full)
}

/// An encoded thumbnail.
#[derive(Debug)]
pub struct Rendered {
    pub bytes: Vec<u8>,
    pub content_type: &'static str,
    pub width: u32,
    pub height: u32,
}

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("the content is not a JPEG, PNG, GIF or WebP image")]
    UnsupportedFormat,
    #[error("the image is {width} x {height} pixels, larger than thumbnails are made for")]
    TooLarge { width: u32, height: u32 },
    #[error("the image could not be decoded: {0}")]
    Decode(image::ImageError),
    #[error("the thumbnail could not be encoded: {0}")]
    Encode(image::ImageError),
}

/// Renders `original` at `size`.
///
/// The dimensions are read from the image header and checked against [`MAX_SIDE`] and
/// [`MAX_PIXELS`] before any pixel is decoded, so an image bomb (a small file whose header claims
/// a huge image) is refused without allocating its pixels. The decoder also gets hard limits in
/// case a header understates what follows. Images smaller than the requested box are never
/// scaled up. JPEG sources give JPEG thumbnails; the others give PNG, which keeps transparency.
/// Animated sources give a still of their first frame.
pub fn render(original: &[u8], size: ThumbnailSize) -> Result<Rendered, RenderError> {
    let format = ImageReader::new(Cursor::new(original))
        .with_guessed_format()
        .map_err(|error| RenderError::Decode(error.into()))?
        .format()
        .filter(|format| {
            matches!(
                format,
                ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::Gif | ImageFormat::WebP
            )
        })
        .ok_or(RenderError::UnsupportedFormat)?;

    let (width, height) = ImageReader::with_format(Cursor::new(original), format)
        .into_dimensions()
        .map_err(RenderError::Decode)?;
    check_dimensions(width, height)?;

    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    limits.max_alloc = Some(MAX_DECODER_ALLOC);
    let mut reader = ImageReader::with_format(Cursor::new(original), format);
    reader.limits(limits);
    let mut decoder = reader.into_decoder().map_err(RenderError::Decode)?;
    // Phone cameras store pictures sideways and record the rotation in EXIF; a thumbnail that
    // ignored it would show a wound photo on its side. A missing or broken EXIF block is not an
    // error: the image is shown as stored.
    let orientation = decoder.orientation().ok();
    let mut image = DynamicImage::from_decoder(decoder).map_err(RenderError::Decode)?;
    if let Some(orientation) = orientation {
        image.apply_orientation(orientation);
    }

    let image = resize(image, size);
    encode(&image, format == ImageFormat::Jpeg)
}

fn check_dimensions(width: u32, height: u32) -> Result<(), RenderError> {
    let pixels = u64::from(width) * u64::from(height);
    if width > MAX_SIDE || height > MAX_SIDE || pixels > MAX_PIXELS {
        return Err(RenderError::TooLarge { width, height });
    }
    Ok(())
}

fn resize(image: DynamicImage, size: ThumbnailSize) -> DynamicImage {
    let (width, height) = (image.width(), image.height());
    match size {
        ThumbnailSize::Full => image,
        // The spec suggests returning the original when it is smaller than the box. It is
        // re-encoded instead, because an original GIF, APNG or WebP may be animated, and a
        // thumbnail must not be unless the client asks for animation.
        ThumbnailSize::Box { width: box_width, height: box_height, .. }
            if width <= box_width && height <= box_height =>
        {
            image
        }
        ThumbnailSize::Box { width: box_width, height: box_height, method: Method::Scale } => {
            image.thumbnail(box_width, box_height)
        }
        ThumbnailSize::Box { width: box_width, height: box_height, method: Method::Crop } => {
            // Without scaling up, the result is at most as large as the image in each dimension.
            let target_width = box_width.min(width);
            let target_height = box_height.min(height);
            // Cut the largest centred region with the target's aspect, then shrink it.
            let (crop_width, crop_height) = if u64::from(width) * u64::from(target_height)
                > u64::from(height) * u64::from(target_width)
            {
                let crop_width =
                    (u64::from(height) * u64::from(target_width) / u64::from(target_height)) as u32;
                (crop_width.max(1), height)
            } else {
                let crop_height =
                    (u64::from(width) * u64::from(target_height) / u64::from(target_width)) as u32;
                (width, crop_height.max(1))
            };
            let x = (width - crop_width) / 2;
            let y = (height - crop_height) / 2;
            image
                .crop_imm(x, y, crop_width, crop_height)
                .thumbnail_exact(target_width, target_height)
        }
    }
}

fn encode(image: &DynamicImage, as_jpeg: bool) -> Result<Rendered, RenderError> {
    let mut bytes = Vec::new();
    let content_type = if as_jpeg {
        let rgb = image.to_rgb8();
        JpegEncoder::new_with_quality(&mut bytes, JPEG_QUALITY)
            .encode_image(&rgb)
            .map_err(RenderError::Encode)?;
        "image/jpeg"
    } else {
        let converted = if image.color().has_alpha() {
            DynamicImage::ImageRgba8(image.to_rgba8())
        } else {
            DynamicImage::ImageRgb8(image.to_rgb8())
        };
        converted
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .map_err(RenderError::Encode)?;
        "image/png"
    };
    Ok(Rendered { bytes, content_type, width: image.width(), height: image.height() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chooses_smallest_default_size_large_enough() {
        let cases = [
            ((10, 10, Method::Crop), "32x32-crop"),
            ((32, 32, Method::Crop), "32x32-crop"),
            ((33, 20, Method::Crop), "96x96-crop"),
            ((96, 96, Method::Scale), "320x240-scale"),
            ((100, 100, Method::Crop), "320x240-scale"),
            ((320, 240, Method::Scale), "320x240-scale"),
            ((321, 240, Method::Scale), "640x480-scale"),
            ((300, 500, Method::Scale), "800x600-scale"),
            ((800, 600, Method::Crop), "800x600-scale"),
            ((801, 600, Method::Scale), "full"),
            ((100, 2000, Method::Scale), "full"),
        ];
        for ((width, height, method), expected) in cases {
            assert_eq!(
                choose_size(width, height, method).key(),
                expected,
                "request {width}x{height} {method:?}"
            );
        }
    }

    fn png(width: u32, height: u32) -> Vec<u8> {
        let image = image::RgbImage::from_fn(width, height, |x, y| {
            image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
        });
        let mut bytes = Vec::new();
        DynamicImage::ImageRgb8(image)
            .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
            .unwrap();
        bytes
    }

    fn decoded_size(bytes: &[u8]) -> (u32, u32) {
        let image = image::load_from_memory(bytes).unwrap();
        (image.width(), image.height())
    }

    #[test]
    fn scale_keeps_aspect_within_box() {
        let size = ThumbnailSize::Box { width: 320, height: 240, method: Method::Scale };
        let rendered = render(&png(1000, 500), size).unwrap();
        assert_eq!(rendered.content_type, "image/png");
        assert_eq!((rendered.width, rendered.height), (320, 160));
        assert_eq!(decoded_size(&rendered.bytes), (320, 160));
    }

    #[test]
    fn crop_fills_box_exactly() {
        let size = ThumbnailSize::Box { width: 96, height: 96, method: Method::Crop };
        let rendered = render(&png(400, 300), size).unwrap();
        assert_eq!(decoded_size(&rendered.bytes), (96, 96));
    }

    #[test]
    fn small_image_is_not_scaled_up() {
        let size = ThumbnailSize::Box { width: 640, height: 480, method: Method::Scale };
        assert_eq!(decoded_size(&render(&png(50, 40), size).unwrap().bytes), (50, 40));

        let size = ThumbnailSize::Box { width: 96, height: 96, method: Method::Crop };
        assert_eq!(decoded_size(&render(&png(50, 200), size).unwrap().bytes), (50, 96));
    }

    #[test]
    fn jpeg_source_gives_jpeg() {
        let image = DynamicImage::ImageRgb8(image::RgbImage::new(200, 100));
        let mut bytes = Vec::new();
        image.write_to(&mut Cursor::new(&mut bytes), ImageFormat::Jpeg).unwrap();
        let size = ThumbnailSize::Box { width: 32, height: 32, method: Method::Crop };
        let rendered = render(&bytes, size).unwrap();
        assert_eq!(rendered.content_type, "image/jpeg");
        assert_eq!(decoded_size(&rendered.bytes), (32, 32));
    }

    #[test]
    fn non_image_is_unsupported() {
        let error = render(b"%PDF-1.7 not an image", ThumbnailSize::Full).unwrap_err();
        assert!(matches!(error, RenderError::UnsupportedFormat), "{error}");
    }

    #[test]
    fn oversized_dimensions_are_refused() {
        for (width, height) in [(10_001, 10), (10, 10_001), (8_000, 8_000)] {
            let error = check_dimensions(width, height).unwrap_err();
            assert!(matches!(error, RenderError::TooLarge { .. }), "{width}x{height}: {error}");
        }
        assert!(check_dimensions(10_000, 5_000).is_ok());
    }
}
