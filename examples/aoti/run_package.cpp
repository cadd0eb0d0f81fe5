// Runs an AOTInductor package of a model built with alexnet_cuda's layers, from C++ only:
// no Python, no alexnet_cuda package; libtorch and alexnet_cuda's operator library.
//
//   run_package MODEL.pt2 libalexnet_cuda_ops.so INPUT.bin N C H W OUTPUT.bin
//
// INPUT.bin holds the float32 input (N, C, H, W), contiguous; OUTPUT.bin gets the first
// output of the model, float32, contiguous. Build: CMakeLists.txt beside this file.
#include <ATen/ATen.h>
#include <dlfcn.h>
#include <torch/csrc/inductor/aoti_package/model_package_loader.h>

#include <cstdlib>
#include <fstream>
#include <iostream>
#include <string>
#include <vector>

namespace {

at::Tensor read_floats(const std::string& path, std::vector<int64_t> shape) {
  at::Tensor t = at::empty(shape, at::kFloat);
  std::ifstream in(path, std::ios::binary);
  in.read(reinterpret_cast<char*>(t.data_ptr<float>()), t.nbytes());
  if (!in) throw std::runtime_error("could not read " + std::to_string(t.nbytes()) + " bytes from " + path);
  return t;
}

void write_floats(const std::string& path, const at::Tensor& t) {
  at::Tensor c = t.to(at::kFloat).contiguous();
  std::ofstream out(path, std::ios::binary);
  out.write(reinterpret_cast<const char*>(c.data_ptr<float>()), c.nbytes());
  if (!out) throw std::runtime_error("could not write " + path);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 9) {
    std::cerr << "usage: " << argv[0] << " MODEL.pt2 libalexnet_cuda_ops.so INPUT.bin N C H W OUTPUT.bin\n";
    return 2;
  }
  // The package calls the alexnet_cuda::* ops through the dispatcher: loading the library
  // registers them (what torch.ops.load_library does in Python).
  if (!dlopen(argv[2], RTLD_NOW | RTLD_GLOBAL)) {
    std::cerr << "cannot load " << argv[2] << ": " << dlerror() << "\n";
    return 1;
  }
  try {
    std::vector<int64_t> shape;
    for (int i = 4; i < 8; ++i) shape.push_back(std::atoll(argv[i]));
    torch::inductor::AOTIModelPackageLoader loader(argv[1]);
    std::vector<at::Tensor> outputs = loader.run({read_floats(argv[3], shape)});
    write_floats(argv[8], outputs.at(0));
    std::cout << "output " << outputs.at(0).sizes() << "\n";
  } catch (const std::exception& e) {
    std::cerr << e.what() << "\n";
    return 1;
  }
  return 0;
}
